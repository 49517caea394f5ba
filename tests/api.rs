//! The bundled Orta Novias API through the gateway: catalog, bookings and every validation
//! rule, the one-booking-per-slot race, durability across kill -9, and two `orta-gateway api`
//! processes sharing one database.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::*;
use orta_gateway::api;
use orta_gateway::api::db::Db;
use serde_json::{Value, json};

/// Two in-process API replicas on one database, behind a gateway (no rate limit).
async fn stack(dir: &Path) -> (TestGateway, Vec<SocketAddr>, Arc<Db>) {
    let db = Db::open(&dir.join("orta.db")).unwrap();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        tokio::spawn(api::serve(l, addr, db.clone(), rx));
        addrs.push(addr);
    }
    let gw = TestGateway::start(&proxy_config(&addrs, "")).await;
    (gw, addrs, db)
}

/// A Wednesday at least a week ahead (open, never today).
fn open_day(weeks: i64) -> String {
    let mut d = time::OffsetDateTime::now_utc().date() + time::Duration::days(7 * weeks);
    while d.weekday() != time::Weekday::Wednesday {
        d = d.next_day().unwrap();
    }
    d.to_string()
}

fn booking(date: &str, slot: &str) -> Value {
    json!({"name": "Carmen Ruiz", "email": "carmen@example.com", "phone": "+34 611 222 333",
           "date": date, "slot": slot, "dress_id": 4, "notes": "First fitting"})
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_reports_the_replica_and_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, addrs, _db) = stack(dir.path()).await;
    let c = plain_client();
    let mut replicas = std::collections::HashSet::new();
    for _ in 0..4 {
        let v: Value = c
            .get(gw.http_url("/api/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "ok");
        replicas.insert(v["replica"].as_str().unwrap().to_string());
    }
    let expected: std::collections::HashSet<String> = addrs.iter().map(|a| a.to_string()).collect();
    assert_eq!(replicas, expected, "both replicas answer behind the gateway");
    // break the database: 503
    let conn = rusqlite::Connection::open(dir.path().join("orta.db")).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = OFF; DROP TABLE appointments; DROP TABLE dresses;")
        .unwrap();
    let r = c.get(format!("http://{}/api/health", addrs[0])).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn the_catalog_pages_filters_and_searches() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _, _) = stack(dir.path()).await;
    let c = plain_client();
    let get = |q: &str| {
        let url = gw.http_url(&format!("/api/dresses{q}"));
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = get("").await;
    assert_eq!(s, 200);
    assert_eq!(v["total"], 31);
    assert_eq!(v["page"], 1);
    assert_eq!(v["per_page"], 12);
    assert_eq!(v["pages"], 3);
    assert_eq!(v["items"].as_array().unwrap().len(), 12);
    assert_eq!(
        v["collections"],
        json!(["Aurora", "Mediterránea", "Atelier", "Esencia"])
    );
    let first = &v["items"][0];
    for field in [
        "id",
        "slug",
        "name",
        "collection",
        "designer",
        "silhouette",
        "neckline",
        "fabric",
        "colour",
        "price_eur",
        "image",
        "description",
    ] {
        assert!(first.get(field).is_some(), "{field}");
    }
    let (_, v) = get("?page=3").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 7);
    let (_, v) = get("?page=9").await;
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        0,
        "past the end: empty, with the totals"
    );
    assert_eq!(v["total"], 31);
    let (_, v) = get("?collection=Aurora").await;
    assert_eq!(v["total"], 8);
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["collection"] == "Aurora")
    );
    let (_, v) = get("?collection=Mediterr%C3%A1nea&per_page=50").await;
    assert_eq!(v["total"], 8);
    let (_, v) = get("?q=SILK").await;
    let n = v["total"].as_u64().unwrap();
    assert!(n > 0 && n < 31, "{n}");
    let (_, v) = get("?q=mermaid+ivory").await;
    assert!(v["items"].as_array().unwrap().iter().all(|d| {
        let text = d.to_string().to_lowercase();
        text.contains("mermaid ivory") || text.contains("mermaid") && text.contains("ivory")
    }));
    let (_, v) = get("?per_page=500").await;
    assert_eq!(v["per_page"], 50, "capped");
    let (_, v) = get("?q=%25").await;
    assert_eq!(v["total"], 0, "LIKE wildcards are literal");
    let (s, _) = get("?page=abc").await;
    assert_eq!(s, 400);
    let (s, _) = get("?page=0").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn one_dress_or_404() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _, _) = stack(dir.path()).await;
    let c = plain_client();
    let r = c.get(gw.http_url("/api/dresses/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["slug"], "alba");
    assert_eq!(d["image"], "/media/dresses/alba.svg");
    for id in ["999", "abc", "0", "-1"] {
        let r = c.get(gw.http_url(&format!("/api/dresses/{id}"))).send().await.unwrap();
        assert_eq!(r.status(), 404, "{id}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "dress not found");
    }
    let r = c.delete(gw.http_url("/api/dresses/1")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn a_booking_is_created_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _, _) = stack(dir.path()).await;
    let c = plain_client();
    let date = open_day(1);
    let r = c
        .post(gw.http_url("/api/appointments"))
        .json(&booking(&date, "11:00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let a: Value = r.json().await.unwrap();
    let id = a["id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "UUID v4");
    assert_eq!(location, format!("/api/appointments/{id}"));
    assert_eq!(a["status"], "confirmed");
    assert_eq!(a["date"], date.as_str());
    assert_eq!(a["dress_id"], 4);
    let back: Value = c
        .get(gw.http_url(&location))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back, a);
    let r = c
        .get(gw.http_url("/api/appointments/00000000-0000-4000-8000-000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // ids do not repeat or follow each other
    let (_, b) = post(&c, &gw.http_url("/api/appointments"), &booking(&date, "12:00")).await;
    assert_ne!(b["id"], a["id"]);
}

#[tokio::test]
async fn every_validation_rule_answers_422_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _, _) = stack(dir.path()).await;
    let c = plain_client();
    let url = gw.http_url("/api/appointments");
    let date = open_day(2);
    let today = time::OffsetDateTime::now_utc().date();
    let past = (today - time::Duration::days(3)).to_string();
    let mut sunday = today + time::Duration::days(7);
    while sunday.weekday() != time::Weekday::Sunday {
        sunday = sunday.next_day().unwrap();
    }
    let monday = sunday.next_day().unwrap().to_string();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("extra", json!(true), "is not a known field"),
        ("email", json!("carmen.example.com"), "is not a valid email address"),
        ("date", json!(past), "is in the past"),
        (
            "date",
            json!(sunday.to_string()),
            "falls on a Sunday or Monday, when the salon is closed",
        ),
        (
            "date",
            json!(monday),
            "falls on a Sunday or Monday, when the salon is closed",
        ),
        ("date", json!("31/12/2030"), "must be a date as YYYY-MM-DD"),
        ("date", json!(""), "is required"),
        (
            "slot",
            json!("14:00"),
            "must be one of the fitting times: 10:00, 11:00, 12:00, 13:00, 16:00, 17:00, 18:00",
        ),
        (
            "slot",
            json!("20:00"),
            "must be one of the fitting times: 10:00, 11:00, 12:00, 13:00, 16:00, 17:00, 18:00",
        ),
        ("slot", json!(""), "is required"),
        ("name", json!("n".repeat(101)), "must be at most 100 characters"),
        ("name", json!(""), "is required"),
        ("notes", json!("x".repeat(1001)), "must be at most 1000 characters"),
        (
            "phone",
            json!("call me"),
            "must be a phone number: at least 6 digits, with only spaces, +, -, ( ) and dots",
        ),
        ("dress_id", json!(9999), "is not a dress in the catalog"),
        ("dress_id", json!("4"), "must be a number"),
    ];
    for (field, value, message) in cases {
        let mut body = booking(&date, "16:00");
        body[field] = value;
        let (status, v) = post(&c, &url, &body).await;
        assert_eq!(status, 422, "{field}: {v}");
        assert_eq!(v["error"], "validation failed");
        assert_eq!(v["fields"][field], message, "{field}: {v}");
    }
    let mut missing = booking(&date, "16:00");
    missing.as_object_mut().unwrap().remove("email");
    let (status, v) = post(&c, &url, &missing).await;
    assert_eq!((status, v["fields"]["email"].as_str()), (422, Some("is required")));
    // malformed JSON, not an object, not JSON at all, too large
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "malformed JSON");
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body(format!("{{\"notes\": \"{}\"}}", "x".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // nothing was stored by any of them
    let (status, _) = post(&c, &url, &booking(&date, "16:00")).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn fifty_concurrent_bookings_of_one_slot_give_exactly_one_201() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _, _) = stack(dir.path()).await;
    let date = open_day(3);
    let url = gw.http_url("/api/appointments");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = url.clone();
        let mut body = booking(&date, "17:00");
        body["name"] = json!(format!("Bride {i}"));
        tasks.push(tokio::spawn(async move {
            let c = plain_client();
            post(&c, &url, &body).await
        }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            (201, _) => created += 1,
            (409, v) => {
                assert_eq!(v["fields"]["slot"], "this slot is already booked; choose another");
                conflicts += 1;
            }
            (s, v) => panic!("unexpected {s}: {v}"),
        }
    }
    assert_eq!((created, conflicts), (1, 49));
}

/// An `orta-gateway api` child process, killed when dropped (a failing test leaves none behind).
struct ApiProcess(Child);

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `orta-gateway api` as a child process; returns it and its address.
fn api_process(db: &Path) -> (ApiProcess, SocketAddr) {
    let mut child = Command::new(bin_path())
        .args(["api", "--listen", "127.0.0.1:0", "--database"])
        .arg(db)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the api process announces its address").unwrap();
        if let Some(a) = line.split("api=").nth(1) {
            break a.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (ApiProcess(child), addr)
}

#[tokio::test]
async fn a_201_booking_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orta.db");
    let (mut child, addr) = api_process(&db);
    let c = plain_client();
    let (status, a) = post(
        &c,
        &format!("http://{addr}/api/appointments"),
        &booking(&open_day(1), "10:00"),
    )
    .await;
    assert_eq!(status, 201);
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let (_child, addr) = api_process(&db);
    let r = c
        .get(format!("http://{addr}/api/appointments/{}", a["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), a);
}

#[tokio::test]
async fn two_api_processes_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orta.db");
    let (mut a, addr_a) = api_process(&db);
    let (mut b, addr_b) = api_process(&db);
    let c = plain_client();
    let date = open_day(2);
    let (status, booked) = post(
        &c,
        &format!("http://{addr_a}/api/appointments"),
        &booking(&date, "13:00"),
    )
    .await;
    assert_eq!(status, 201);
    let seen: Value = c
        .get(format!(
            "http://{addr_b}/api/appointments/{}",
            booked["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen, booked, "written by one process, read by the other");
    // both processes race for one slot: the database lets exactly one win
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = if i % 2 == 0 { addr_a } else { addr_b };
        let body = booking(&date, "18:00");
        tasks.push(tokio::spawn(async move {
            post(&plain_client(), &format!("http://{addr}/api/appointments"), &body)
                .await
                .0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 19, "{statuses:?}");
    for p in [&mut a, &mut b] {
        let _ = Command::new("kill").args(["-TERM", &p.0.id().to_string()]).status();
        assert_eq!(p.0.wait().unwrap().code(), Some(0));
    }
}

#[tokio::test]
async fn the_readme_booking_example_books_a_fitting() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    // the example's command: its `$ curl` line and the continuation after it
    let lines: Vec<&str> = readme.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("$ curl") && l.contains("/api/appointments"))
        .expect("README has a booking example");
    let mut command = String::new();
    for l in &lines[at..] {
        let l = l.trim_start_matches("$ ");
        match l.strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(l);
                break;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (gw, _, _) = stack(dir.path()).await;
    let command = command.replace("https://127.0.0.1:8443", &gw.https_url("")) + " -w '\\n%{http_code}'";
    let out = tokio::process::Command::new("bash")
        .args(["-c", &command])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert_eq!(
        status,
        "201",
        "{command}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let booked: Value = serde_json::from_str(body).unwrap();
    assert_eq!(booked["name"], "Ana", "{booked}");
}
