//! Conformance suite of the SQL store port, run against SQLite and MariaDB:
//! the behaviours the services' correctness rests on.

use std::sync::Arc;

use promo_platform::{
    ports::{
        sql::{self, Migrations},
        Database, Migration,
    },
    testing,
};

const MYSQL: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: "CREATE TABLE items (id VARCHAR(64) PRIMARY KEY, n BIGINT NOT NULL, quota BIGINT NOT NULL);\n\
          CREATE TABLE claims (item VARCHAR(64) NOT NULL, who VARCHAR(64) NOT NULL, UNIQUE KEY uq_claim (item, who));\n",
}];
const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: "CREATE TABLE items (id TEXT PRIMARY KEY, n INTEGER NOT NULL, quota INTEGER NOT NULL);\n\
          CREATE TABLE claims (item TEXT NOT NULL, who TEXT NOT NULL, UNIQUE (item, who));\n",
}];
const MIGRATIONS: Migrations = Migrations {
    mysql: MYSQL,
    sqlite: SQLITE,
};

async fn suite(db: Database) {
    assert_eq!(db.migrate(&MIGRATIONS).await.unwrap(), 1);
    assert_eq!(
        db.migrate(&MIGRATIONS).await.unwrap(),
        0,
        "migrations run once"
    );
    db.ping().await.unwrap();

    sqlx::query("INSERT INTO items (id, n, quota) VALUES ('a', 0, 10)")
        .execute(db.pool())
        .await
        .unwrap();

    // Unique violations are recognisable on both dialects.
    sqlx::query("INSERT INTO claims (item, who) VALUES ('a', 'x')")
        .execute(db.pool())
        .await
        .unwrap();
    let dup = sqlx::query("INSERT INTO claims (item, who) VALUES ('a', 'x')")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert!(
        promo_platform::ports::sql::is_unique_violation(&dup),
        "{dup}"
    );
    let ignored = sqlx::query(&format!(
        "{} INTO claims (item, who) VALUES ('a', 'x')",
        db.dialect().insert_ignore()
    ))
    .execute(db.pool())
    .await
    .unwrap();
    assert_eq!(ignored.rows_affected(), 0);

    // A conditional update never passes its bound under concurrency.
    let db = Arc::new(db);
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                sqlx::query("UPDATE items SET n = n + 1 WHERE id = 'a' AND n < quota")
                    .execute(db.pool())
                    .await
                    .unwrap()
                    .rows_affected()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap();
    }
    assert_eq!(won, 10);

    // Read-lock-modify-write in a transaction loses no update.
    sqlx::query("UPDATE items SET n = 0, quota = 1000 WHERE id = 'a'")
        .execute(db.pool())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.pool().begin().await.unwrap();
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT n FROM items WHERE id = 'a'{}",
                    db.dialect().for_update()
                ))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                sqlx::query("UPDATE items SET n = ? WHERE id = 'a'")
                    .bind(n + 1)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT n FROM items WHERE id = 'a'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 40);

    // The consumer's unlocked try: what it wrote after a savepoint goes when
    // the conditional update at the end finds the bound gone; what came
    // before stays, and the transaction goes on to commit.
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO claims (item, who) VALUES ('a', 'before')")
        .execute(&mut *tx)
        .await
        .unwrap();
    sql::savepoint(&mut tx, "unlocked").await.unwrap();
    sqlx::query("INSERT INTO claims (item, who) VALUES ('a', 'after')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let moved = sqlx::query("UPDATE items SET n = n + 1 WHERE id = 'a' AND n + 1 <= 40")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(moved, 0, "the bound is gone");
    sql::rollback_to(&mut tx, "unlocked").await.unwrap();
    sqlx::query("INSERT INTO claims (item, who) VALUES ('a', 'locked')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut who: Vec<String> =
        sqlx::query_scalar("SELECT who FROM claims WHERE item = 'a' AND who <> 'x'")
            .fetch_all(db.pool())
            .await
            .unwrap();
    who.sort();
    assert_eq!(who, ["before", "locked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_conforms() {
    let (db, _dir) = testing::fresh_sqlite("conformance").await;
    suite(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_conforms() {
    suite(testing::fresh_mysql("conformance").await).await;
}

async fn sqlite_synchronous(durability: promo_platform::config::Durability) -> i64 {
    use promo_platform::config::{BackendArgs, Backends};
    let dir = promo_platform::testing::TempDir::new();
    let args = BackendArgs {
        embedded_durability: durability,
        ..BackendArgs::embedded(&dir.0)
    };
    let backends = Backends::connect(&args).await.unwrap();
    let db = backends.database("d").await.unwrap();
    sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn power_durability_makes_sqlite_commits_wait_for_the_disk() {
    use promo_platform::config::Durability;
    // SQLite's levels: 1 = NORMAL, 2 = FULL.
    assert_eq!(sqlite_synchronous(Durability::Process).await, 1);
    assert_eq!(sqlite_synchronous(Durability::Power).await, 2);
}

#[tokio::test]
async fn database_names_carry_the_deployment_prefix() {
    use promo_platform::config::{BackendArgs, Backends};
    let dir = promo_platform::testing::TempDir::new();
    let args = BackendArgs {
        mysql_url: Some("mysql://u:p@db:3306".into()),
        database_prefix: "bench_".into(),
        ..BackendArgs::embedded(&dir.0)
    };
    let backends = Backends::connect(&args).await.unwrap();
    let url = backends.database_url("promo_coupon").unwrap();
    assert!(url.ends_with("/bench_promo_coupon"), "{url}");
}
