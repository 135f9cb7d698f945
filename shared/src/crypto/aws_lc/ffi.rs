//! ML-DSA-65 under a FIPS 204 context string, through AWS-LC's C API: the one thing `aws-lc-rs`
//! does not expose (its ML-DSA API signs and verifies under the empty context only). The only
//! `unsafe` code in the workspace.
//!
//! Each call builds its own AWS-LC objects and frees them before returning, through owning
//! wrappers whose `Drop` frees them on every path: nothing outlives a call, nothing is shared
//! between threads, so no `Send`/`Sync` claim is made about any AWS-LC object. The price is one
//! key expansion per call, paid only under non-empty contexts, which sign rare objects
//! (transparency-log checkpoints), never tokens; BENCHMARKS.md found it lost in the noise.
//!
//! The sequence is AWS-LC's documented one for pure ML-DSA with a context (`evp.h`,
//! `EVP_PKEY_CTX_set1_signature_context_string`): a key from `EVP_PKEY_pqdsa_new_raw_*_key`,
//! `EVP_DigestSignInit`/`EVP_DigestVerifyInit` with no digest (ML-DSA hashes the message
//! itself), the context set on the `EVP_PKEY_CTX` that init returned, then one-shot
//! `EVP_DigestSign`/`EVP_DigestVerify`. On failure AWS-LC leaves a code on its thread-local
//! error queue; it is a fixed-size ring nobody here reads, so it is not cleared.

use std::ptr::{self, NonNull};

use aws_lc_sys::{
    EVP_DigestSign, EVP_DigestSignInit, EVP_DigestVerify, EVP_DigestVerifyInit, EVP_MD_CTX,
    EVP_MD_CTX_free, EVP_MD_CTX_new, EVP_PKEY, EVP_PKEY_CTX,
    EVP_PKEY_CTX_set1_signature_context_string, EVP_PKEY_free, EVP_PKEY_pqdsa_new_raw_private_key,
    EVP_PKEY_pqdsa_new_raw_public_key, NID_MLDSA65,
};

use super::super::{MAX_CONTEXT_LEN, PUBLIC_KEY_LEN, SEED_LEN, SIGNATURE_LEN};
use crate::Error;

/// A hedged ML-DSA-65 signature over `message` under `context` (0 to [`MAX_CONTEXT_LEN`]
/// bytes) by the key expanded from `seed`.
pub(super) fn sign_in_context(
    seed: &[u8; SEED_LEN],
    message: &[u8],
    context: &[u8],
) -> Result<Vec<u8>, Error> {
    if context.len() > MAX_CONTEXT_LEN {
        return Err(Error::Signing);
    }
    // SAFETY: reads `SEED_LEN` bytes from a live array. AWS-LC expands the seed into a new key
    // (and copies it: nothing keeps a pointer into `seed`); null on failure.
    let key = Key::new(unsafe {
        EVP_PKEY_pqdsa_new_raw_private_key(NID_MLDSA65, seed.as_ptr(), seed.len())
    })
    .ok_or(Error::Signing)?;
    let ctx = Operation::start(&key, context, Direction::Sign).ok_or(Error::Signing)?;
    let mut signature = vec![0u8; SIGNATURE_LEN];
    let mut len = signature.len();
    // SAFETY: `ctx` is a live context initialised for signing; `signature` is writable for
    // `len` bytes (AWS-LC refuses a shorter buffer rather than overrun it) and `len` tells
    // AWS-LC so; `message` is readable for its length. AWS-LC writes the length it used back
    // into `len`.
    let signed = unsafe {
        EVP_DigestSign(
            ctx.as_ptr(),
            signature.as_mut_ptr(),
            &mut len,
            message.as_ptr(),
            message.len(),
        )
    };
    if signed != 1 || len != SIGNATURE_LEN {
        return Err(Error::Signing);
    }
    Ok(signature)
}

/// Whether `signature` is a valid ML-DSA-65 signature over `message` under `context` by the
/// encoded public key `public_key`. `false` for anything malformed.
pub(super) fn verify_in_context(
    public_key: &[u8],
    message: &[u8],
    context: &[u8],
    signature: &[u8],
) -> bool {
    if public_key.len() != PUBLIC_KEY_LEN
        || signature.len() != SIGNATURE_LEN
        || context.len() > MAX_CONTEXT_LEN
    {
        return false;
    }
    // SAFETY: reads `public_key.len()` bytes from a live slice, copied into the new key; null
    // on failure.
    let Some(key) = Key::new(unsafe {
        EVP_PKEY_pqdsa_new_raw_public_key(NID_MLDSA65, public_key.as_ptr(), public_key.len())
    }) else {
        return false;
    };
    let Some(ctx) = Operation::start(&key, context, Direction::Verify) else {
        return false;
    };
    // SAFETY: `ctx` is a live context initialised for verifying; `signature` and `message` are
    // readable for their lengths. 1 means valid; anything else (0, or a negative error) not.
    let verified = unsafe {
        EVP_DigestVerify(
            ctx.as_ptr(),
            signature.as_ptr(),
            signature.len(),
            message.as_ptr(),
            message.len(),
        )
    };
    verified == 1
}

/// An `EVP_PKEY` this module owns, freed on drop.
struct Key(NonNull<EVP_PKEY>);

impl Key {
    /// Take ownership of what an `EVP_PKEY_*_new` function returned; `None` for its null.
    fn new(raw: *mut EVP_PKEY) -> Option<Self> {
        NonNull::new(raw).map(Self)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: we own the key (from `new`) and free it once. AWS-LC cleanses a private key's
        // memory when it frees it.
        unsafe { EVP_PKEY_free(self.0.as_ptr()) }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Sign,
    Verify,
}

/// An `EVP_MD_CTX` this module owns, set up for one sign or verify operation, freed on drop
/// (with the `EVP_PKEY_CTX` init attached to it). Borrows the key it was set up with, so the
/// key cannot be freed first.
struct Operation<'key> {
    ctx: NonNull<EVP_MD_CTX>,
    _key: &'key Key,
}

impl<'key> Operation<'key> {
    /// A context for `direction` with `key`, under `context`. `None` if AWS-LC refuses any
    /// step (allocation, a key of another type, a context over 255 bytes).
    fn start(key: &'key Key, context: &[u8], direction: Direction) -> Option<Self> {
        // SAFETY: no arguments; returns a new context or null.
        let ctx = NonNull::new(unsafe { EVP_MD_CTX_new() })?;
        // Owned from here, so freed on every return below.
        let operation = Self { ctx, _key: key };
        let mut pkey_ctx: *mut EVP_PKEY_CTX = ptr::null_mut();
        // SAFETY: `ctx` and `key` are live. A null digest is what pure ML-DSA takes; the null
        // engine is AWS-LC's only value for it. On success `pkey_ctx` points to a context owned
        // by `ctx` (freed with it, never by us). Init takes a reference on the key, and the
        // borrow in `Operation` keeps our own alive as long as `ctx` anyway.
        let initialised = unsafe {
            match direction {
                Direction::Sign => EVP_DigestSignInit(
                    ctx.as_ptr(),
                    &mut pkey_ctx,
                    ptr::null(),
                    ptr::null_mut(),
                    key.0.as_ptr(),
                ),
                Direction::Verify => EVP_DigestVerifyInit(
                    ctx.as_ptr(),
                    &mut pkey_ctx,
                    ptr::null(),
                    ptr::null_mut(),
                    key.0.as_ptr(),
                ),
            }
        };
        if initialised != 1 || pkey_ctx.is_null() {
            return None;
        }
        // SAFETY: `pkey_ctx` is live (owned by `ctx`); `context` is readable for its length,
        // and AWS-LC copies it (the `set1`), refusing more than 255 bytes. An empty slice's
        // pointer is never read: AWS-LC reads `context_len` bytes.
        let set = unsafe {
            EVP_PKEY_CTX_set1_signature_context_string(pkey_ctx, context.as_ptr(), context.len())
        };
        (set == 1).then_some(operation)
    }

    fn as_ptr(&self) -> *mut EVP_MD_CTX {
        self.ctx.as_ptr()
    }
}

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the context (from `EVP_MD_CTX_new`) and free it once, with the
        // `EVP_PKEY_CTX` attached to it.
        unsafe { EVP_MD_CTX_free(self.ctx.as_ptr()) }
    }
}
