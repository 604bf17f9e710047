//! The SDS fan-out benchmark (run by `scripts/bench-sds.sh`): opens N SDS streams to a running
//! pillion, each on its own connection as N Envoys would, waits until every one has the
//! certificate `web`, then asks pillion to renew (SIGUSR1) and times how long each stream takes
//! to receive the renewed certificate. Prints the latencies and pillion's resident memory before
//! and with the streams open.
//!
//! Usage: sds_streams SOCKET PILLION_PID [STREAMS] [ROUNDS]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn request(nonce: &str, version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: vec!["web".to_owned()],
        type_url: TYPE.to_owned(),
        response_nonce: nonce.to_owned(),
        version_info: version.to_owned(),
        ..Default::default()
    }
}

/// One stream: reports each response's arrival time on `arrived`.
async fn stream(
    socket: PathBuf,
    arrived: mpsc::UnboundedSender<(usize, Instant, String)>,
    id: usize,
) {
    let channel = tonic::transport::Endpoint::try_from("http://pillion.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to pillion's SDS socket");
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(request("", "")).await.unwrap();
    let mut responses = client
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .expect("StreamSecrets")
        .into_inner();
    while let Ok(Some(DiscoveryResponse {
        nonce,
        version_info,
        ..
    })) = responses.message().await
    {
        let _ = arrived.send((id, Instant::now(), version_info.clone()));
        // ACK it, as Envoy does.
        if tx.send(request(&nonce, &version_info)).await.is_err() {
            break;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let socket = PathBuf::from(&args[1]);
    let pid: u32 = args[2].parse().expect("PILLION_PID");
    let streams: usize = args.get(3).map_or(50, |s| s.parse().unwrap());
    let rounds: usize = args.get(4).map_or(10, |s| s.parse().unwrap());
    let before = rss_kib(pid);
    let (tx, mut rx) = mpsc::unbounded_channel();
    for id in 0..streams {
        tokio::spawn(stream(socket.clone(), tx.clone(), id));
    }
    let mut version = vec![String::new(); streams];
    let mut have = 0;
    while have < streams {
        let (id, _, v) = rx.recv().await.unwrap();
        if version[id].is_empty() {
            have += 1;
        }
        version[id] = v;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = rss_kib(pid);
    let mut latencies = Vec::new();
    let mut spreads = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::USR1,
        )
        .expect("signal pillion");
        let mut got = vec![None; streams];
        let mut left = streams;
        while left > 0 {
            let (id, at, v) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("every stream gets the renewed certificate within 10 s")
                .unwrap();
            if v != version[id] && got[id].is_none() {
                got[id] = Some(at - start);
                version[id] = v;
                left -= 1;
            }
        }
        let mut round: Vec<Duration> = got.into_iter().flatten().collect();
        round.sort();
        spreads.push(round[round.len() - 1] - round[0]);
        latencies.extend(round);
        // Let SIGUSR1's rate limit and the round settle.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    latencies.sort();
    spreads.sort();
    println!(
        "{streams} SDS streams, {rounds} renewals: SIGUSR1 -> renewed certificate received: median {:.1} ms, p99 {:.1} ms, max {:.1} ms; first to last stream of a renewal: median {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        percentile(&spreads, 0.5).as_secs_f64() * 1e3,
    );
    println!(
        "pillion RSS: {before} kB before, {open} kB with {streams} streams open (+{} kB)",
        open.saturating_sub(before)
    );
}
