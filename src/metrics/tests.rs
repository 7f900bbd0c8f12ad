//! The registry's text format, the textfile's merge, the endpoint's answers.

use super::endpoint::answer;
use super::textfile::{merge, parse};
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[test]
fn samples_are_written_in_the_text_format() {
    let mut samples = Samples::new();
    samples
        .entry(API_REQUESTS.name)
        .or_default()
        .insert(render_labels(API_REQUESTS.labels, &["GET", "200"]), 3.0);
    samples
        .entry(POOL.name)
        .or_default()
        .insert(render_labels(POOL.labels, &["a\"b\\c\nd"]), 2.0);
    samples
        .entry(LOCK_WAIT_SECONDS.name)
        .or_default()
        .insert(String::new(), 0.25);
    let text = encode(&samples);
    assert!(text.contains(
        "# TYPE doproxy_api_requests_total counter\ndoproxy_api_requests_total{method=\"GET\",status=\"200\"} 3\n"
    ));
    assert!(text.contains("doproxy_pool_droplets{status=\"a\\\"b\\\\c\\nd\"} 2\n"));
    assert!(text.contains("doproxy_lock_wait_seconds_total 0.25\n"));
    assert!(
        text.contains("doproxy_api_retries_total 0\n"),
        "untouched reads 0"
    );
    assert!(
        !text.contains("doproxy_scale_events_total{"),
        "no label set yet"
    );
    assert_eq!(
        (number(f64::INFINITY), number(f64::NAN)),
        ("+Inf".into(), "NaN".into())
    );
}

#[tokio::test]
async fn scrapes_get_the_metrics_and_nothing_else() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    for (request, status, body) in [
        ("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "200", true),
        ("HEAD /metrics HTTP/1.1\r\n\r\n", "200", false),
        ("GET / HTTP/1.1\r\n\r\n", "404", true),
        ("POST /metrics HTTP/1.1\r\n\r\n", "405", true),
    ] {
        let client = async {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let server = async { answer(listener.accept().await.unwrap().0).await };
        let (answer, served) = tokio::join!(client, server);
        served.unwrap();
        let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert_eq!(!rest.is_empty(), body, "{request}: {answer}");
        if body {
            let length = format!("Content-Length: {}", rest.len());
            assert!(head.contains(&length), "{head}");
        }
        if status == "200" {
            assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        }
    }
}

#[test]
fn a_textfile_adds_up_counters_and_keeps_the_latest_gauges() {
    let mut earlier = Samples::new();
    earlier
        .entry(RELOADS.name)
        .or_default()
        .insert(String::new(), 2.0);
    earlier
        .entry(AUTOSCALE_TARGET.name)
        .or_default()
        .insert(String::new(), 5.0);
    earlier
        .entry(LAST_RECONCILE.name)
        .or_default()
        .insert(String::new(), 100.0);
    let text = encode(&earlier) + "some_other_metric 7\n";
    let read = parse(&text);
    assert_eq!(read[RELOADS.name][""], 2.0);
    assert!(!read.contains_key("some_other_metric"));
    let mut now = Samples::new();
    now.entry(RELOADS.name)
        .or_default()
        .insert(String::new(), 1.0);
    now.entry(LAST_RECONCILE.name)
        .or_default()
        .insert(String::new(), 200.0);
    let merged = merge(read, &now);
    assert_eq!(merged[RELOADS.name][""], 3.0);
    assert_eq!(merged[LAST_RECONCILE.name][""], 200.0);
    assert_eq!(merged[AUTOSCALE_TARGET.name][""], 5.0);
}

#[test]
fn a_gauge_this_run_set_drops_the_labels_it_no_longer_has() {
    let status = |s: &str| render_labels(POOL.labels, &[s]);
    let mut earlier = Samples::new();
    let pool = earlier.entry(POOL.name).or_default();
    pool.insert(status("active"), 2.0);
    pool.insert(status("destroying"), 1.0);
    let mut now = Samples::new();
    now.entry(POOL.name)
        .or_default()
        .insert(status("active"), 1.0);
    let merged = merge(earlier, &now);
    assert_eq!(merged[POOL.name].len(), 1);
    assert_eq!(merged[POOL.name][&status("active")], 1.0);
}
