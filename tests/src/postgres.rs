//! A fresh PostgreSQL database per test, on the server `REVOCAST_TEST_DATABASE_URL` points at
//! (`.ci/run` sets it). Without the variable, [`TestDatabase::create`] prints why the test is
//! skipped and returns `None`, so `cargo test` passes on a machine without PostgreSQL.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub const ENV: &str = "REVOCAST_TEST_DATABASE_URL";

/// A database created for one test and dropped (with whatever still connects to it) after.
pub struct TestDatabase {
    /// URL of the test's own database.
    pub url: String,
    server_url: String,
    name: String,
}

impl TestDatabase {
    /// Create a new, empty database named after `test` on the server of [`ENV`].
    pub async fn create(test: &str) -> Option<Self> {
        let Ok(server_url) = std::env::var(ENV) else {
            eprintln!(
                "skipped {test}: set {ENV} (e.g. postgres://postgres@127.0.0.1:5432/test) to run it against a real PostgreSQL"
            );
            return None;
        };
        Some(
            Self::create_on(&server_url, test)
                .await
                .unwrap_or_else(|e| panic!("{ENV} is set but no database can be made: {e}")),
        )
    }

    /// Create a new, empty database named after `label` on the server `server_url` names.
    pub async fn create_on(server_url: &str, label: &str) -> Result<Self, sqlx::Error> {
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let name = format!("revocast_{label}_{}", u32::from_le_bytes(random));
        let mut conn = PgConnection::connect(server_url).await?;
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        Ok(Self {
            url: with_database(server_url, &name),
            server_url: server_url.to_string(),
            name,
        })
    }

    /// Terminate every server connection to this database, as a PostgreSQL restart does to its
    /// clients (without disturbing tests that use other databases on the same server).
    pub async fn terminate_connections(&self) -> u64 {
        let mut conn = PgConnection::connect(&self.server_url)
            .await
            .expect("connect to the server");
        let n = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .execute(&mut conn)
        .await
        .expect("terminate connections")
        .rows_affected();
        conn.close().await.ok();
        n
    }

    /// A SQL connection to the test database, to look at what the replicas stored.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime; the cleanup needs one of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&server_url).await.ok()?;
                sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        });
        let _ = cleanup.join();
    }
}

/// `url` with its database name replaced by `name` (any query string is kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let server = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        use super::with_database as w;
        assert_eq!(w("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(w("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            w("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }
}
