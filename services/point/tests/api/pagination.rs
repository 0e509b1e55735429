//! History pages newest first; entries added while paging are not shown
//! in later pages, and none is skipped or repeated.

use std::collections::HashSet;

use futures::future::join;

use crate::helpers::{spawn_app, Backend};

async fn paging_while_entries_arrive(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut initial = Vec::new();
    for i in 1..=30 {
        let a = app.earn("u", i).await;
        initial.push(a.body["entryId"].as_str().unwrap().to_string());
    }
    let reader = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/users/u/points/history?limit=7&cursor={c}"),
                None => "/users/u/points/history?limit=7".to_string(),
            };
            let page = app.get(&path).await;
            assert_eq!(page.status, 200, "{}", page.body);
            let items = page.body["items"].as_array().unwrap();
            assert!(items.len() <= 7);
            seen.extend(
                items
                    .iter()
                    .map(|e| e["entryId"].as_str().unwrap().to_string()),
            );
            match page.body["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        seen
    };
    let writer = async {
        for _ in 0..20 {
            assert_eq!(app.earn("u", 1).await.status, 200);
        }
    };
    let (seen, ()) = join(reader, writer).await;
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no entry repeated");
    let newer: Vec<&String> = seen.iter().filter(|id| !initial.contains(id)).collect();
    // The first page may have begun after some new entries arrived; those
    // come first and are newer than everything initial.
    let initial_seen: Vec<&String> = seen.iter().filter(|id| initial.contains(id)).collect();
    let mut expected: Vec<&String> = initial.iter().collect();
    expected.reverse();
    assert_eq!(
        initial_seen, expected,
        "every initial entry once, newest first, none skipped"
    );
    assert!(
        seen[..newer.len()].iter().all(|id| !initial.contains(id)),
        "new entries only ahead of the first page"
    );
    let bad = app.get("/users/u/points/history?limit=101").await;
    assert_eq!(
        (bad.status, bad.body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let bad = app.get("/users/u/points/history?cursor=abc").await;
    assert_eq!(bad.status, 400);
}

promo_platform::on_both_backends!(paging_while_entries_arrive);
