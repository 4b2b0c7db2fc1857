//! `--compress auto` on the origin: the link probe, then the codec measured on the process's
//! own memory.

use std::time::Instant;

use ferry_proto::v1::SinkChunk;
use ferry_proto::v1::peer_client::PeerClient;
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::dump::autocodec;
use crate::image::Codec;

/// `--compress auto`: measures the link (a burst through `Peer.Sink`), then lets
/// [`autocodec::choose`] measure each codec on a sample of the process's own memory and pick
/// the codec under which the whole pipeline (read, compress on every core, send) is fastest.
/// Returns the codec and why.
pub(super) async fn choose_codec(client: &mut PeerClient<Channel>, pid: i32) -> (Codec, String) {
    const PROBE: usize = 16 << 20;
    let t = Instant::now();
    let burst = futures_burst(PROBE);
    let link = match client.sink(burst).await {
        Ok(_) => PROBE as f64 / t.elapsed().as_secs_f64(),
        Err(s) => {
            tracing::info!(error = %s.message(), "link probe failed; using zstd");
            return (
                Codec::Zstd,
                format!("auto: zstd (the link probe failed: {})", s.message()),
            );
        }
    };
    let choice = tokio::task::spawn_blocking(move || {
        autocodec::choose(
            Pid::from_raw(pid),
            autocodec::Output::Link(link),
            Codec::Lz4,
        )
    })
    .await;
    match choice {
        Ok(c) => {
            tracing::info!(why = %c.why, "compression chosen");
            (c.codec, c.why)
        }
        Err(e) => (
            Codec::Lz4,
            format!("auto: lz4 (the measurement failed: {e})"),
        ),
    }
}

fn futures_burst(bytes: usize) -> impl tokio_stream::Stream<Item = SinkChunk> + Send + 'static {
    let piece = vec![0x5au8; 1 << 20];
    tokio_stream::iter((0..bytes / piece.len()).map(move |_| SinkChunk {
        data: piece.clone(),
    }))
}
