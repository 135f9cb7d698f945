//! The AWS-LC backend (feature `aws-lc`). Keys, and signatures under the empty context (every
//! JWS), go through `aws-lc-rs`'s safe ML-DSA-65 API. That API has no context string, so a
//! non-empty context goes through [`ffi`], a few calls into AWS-LC's EVP interface, which has.

use aws_lc_rs::signature::{KeyPair, ML_DSA_65, ML_DSA_65_SIGNING, ParsedPublicKey, PqdsaKeyPair};

use super::{
    MAX_CONTEXT_LEN, MessageSigner, MessageVerifier, MlDsa65Backend, PUBLIC_KEY_LEN, SIGNATURE_LEN,
    SigningSeed,
};
use crate::Error;

#[allow(unsafe_code)]
mod ffi;

/// AWS-LC's ML-DSA-65 (through `aws-lc-rs`): the default backend when the `aws-lc` feature
/// compiles it in.
#[derive(Debug, Default, Clone, Copy)]
pub struct AwsLc;

struct Signer {
    key: PqdsaKeyPair,
    /// Kept for signing under a non-empty context, which expands it again in [`ffi`]:
    /// `PqdsaKeyPair` does not lend out the key it holds.
    seed: SigningSeed,
}

struct Verifier {
    key: ParsedPublicKey,
    /// Kept for verifying under a non-empty context (see [`Signer::seed`]).
    public_key: Box<[u8]>,
}

impl MlDsa65Backend for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc"
    }

    fn signer(&self, seed: &SigningSeed) -> Result<Box<dyn MessageSigner>, Error> {
        let key = PqdsaKeyPair::from_seed(&ML_DSA_65_SIGNING, seed.expose_secret())
            .map_err(|_| Error::Signing)?;
        Ok(Box::new(Signer {
            key,
            seed: seed.clone(),
        }))
    }

    fn verifier(&self, public_key: &[u8]) -> Result<Box<dyn MessageVerifier>, Error> {
        // aws-lc-rs also accepts a DER SubjectPublicKeyInfo here; only the raw encoding is an
        // ML-DSA-65 public key in RFC 9964.
        if public_key.len() != PUBLIC_KEY_LEN {
            return Err(Error::InvalidPublicKey(
                "an ML-DSA-65 public key is 1952 bytes",
            ));
        }
        let key = ParsedPublicKey::new(&ML_DSA_65, public_key)
            .map_err(|_| Error::InvalidPublicKey("not an ML-DSA-65 public key"))?;
        Ok(Box::new(Verifier {
            key,
            public_key: public_key.into(),
        }))
    }
}

impl MessageSigner for Signer {
    fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    fn sign_in_context(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
        if context.len() > MAX_CONTEXT_LEN {
            return Err(Error::Signing);
        }
        if !context.is_empty() {
            return ffi::sign_in_context(self.seed.expose_secret(), message, context);
        }
        let mut signature = vec![0; SIGNATURE_LEN];
        match self.key.sign(message, &mut signature) {
            Ok(SIGNATURE_LEN) => Ok(signature),
            _ => Err(Error::Signing),
        }
    }
}

impl MessageVerifier for Verifier {
    fn verify_in_context(&self, message: &[u8], context: &[u8], signature: &[u8]) -> bool {
        if signature.len() != SIGNATURE_LEN || context.len() > MAX_CONTEXT_LEN {
            return false;
        }
        if context.is_empty() {
            self.key.verify_sig(message, signature).is_ok()
        } else {
            ffi::verify_in_context(&self.public_key, message, context, signature)
        }
    }
}

#[cfg(test)]
mod tests {
    //! The FFI path against aws-lc-rs's own, under the one context both have: the empty one.

    use super::*;

    #[test]
    fn the_ffi_path_and_aws_lc_rs_agree_under_the_empty_context() {
        let seed = SigningSeed::generate().unwrap();
        let signer = AwsLc.signer(&seed).unwrap();
        let public_key = signer.public_key();
        let key = ParsedPublicKey::new(&ML_DSA_65, &public_key).unwrap();

        let by_ffi = ffi::sign_in_context(seed.expose_secret(), b"m", b"").unwrap();
        assert!(key.verify_sig(b"m", &by_ffi).is_ok());
        assert!(key.verify_sig(b"n", &by_ffi).is_err());

        let by_aws_lc_rs = signer.sign(b"m").unwrap();
        assert!(ffi::verify_in_context(
            &public_key,
            b"m",
            b"",
            &by_aws_lc_rs
        ));
        assert!(!ffi::verify_in_context(
            &public_key,
            b"n",
            b"",
            &by_aws_lc_rs
        ));
        assert!(!ffi::verify_in_context(
            &public_key,
            b"m",
            b"c",
            &by_aws_lc_rs
        ));
    }

    #[test]
    fn the_ffi_path_refuses_what_it_cannot_use() {
        let seed = SigningSeed::generate().unwrap();
        let public_key = AwsLc.signer(&seed).unwrap().public_key();
        let signature = ffi::sign_in_context(seed.expose_secret(), b"m", b"c").unwrap();
        assert!(ffi::verify_in_context(&public_key, b"m", b"c", &signature));
        // A public key of the wrong length, a context too long for FIPS 204.
        assert!(!ffi::verify_in_context(
            &public_key[1..],
            b"m",
            b"c",
            &signature
        ));
        let too_long = [0; MAX_CONTEXT_LEN + 1];
        assert!(!ffi::verify_in_context(
            &public_key,
            b"m",
            &too_long,
            &signature
        ));
        assert!(ffi::sign_in_context(seed.expose_secret(), b"m", &too_long).is_err());
    }
}
