//! gRPC intake sender: one `PublishStream` per connection, a batch per call, settled by the
//! server's cumulative acknowledgement.

use anyhow::{Context, Result, bail};
use hooker_grpc::hooker::v1::{Event, PublishAck, PublishBatch, intake_client::IntakeClient};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::{Events, Outcome, Sender};

pub struct GrpcSender {
    batches: mpsc::Sender<PublishBatch>,
    acks: Streaming<PublishAck>,
    events: Events,
    seq: u64,
}

impl GrpcSender {
    pub async fn connect(target: &str, events: Events) -> Result<Self> {
        let Some(address) = target.strip_prefix("grpc://") else {
            bail!("{target}: expected grpc://HOST:PORT");
        };
        let mut client = IntakeClient::connect(format!("http://{address}"))
            .await
            .with_context(|| format!("connect {address}"))?
            .max_encoding_message_size(64 << 20);
        let (batches, rx) = mpsc::channel(4);
        let acks = client
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(GrpcSender {
            batches,
            acks,
            events,
            seq: 0,
        })
    }
}

impl Sender for GrpcSender {
    async fn send(&mut self, first: u64, n: usize) -> Result<Outcome> {
        self.seq += 1;
        let events = (first..first + n as u64)
            .map(|seq| {
                let mut payload = Vec::new();
                self.events.one(seq, &mut payload);
                Event {
                    payload,
                    ..Event::default()
                }
            })
            .collect();
        self.batches
            .send(PublishBatch {
                seq: self.seq,
                events,
            })
            .await
            .context("stream closed")?;
        let (mut accepted, mut rejected) = (0, 0);
        loop {
            let Some(ack) = self.acks.message().await? else {
                bail!("stream ended");
            };
            accepted += ack.accepted as usize;
            rejected += ack.rejected as usize;
            if ack.seq >= self.seq {
                break;
            }
        }
        if rejected > 0 && accepted == 0 {
            return Ok(Outcome::Rejected(rejected));
        }
        Ok(Outcome::Accepted(accepted))
    }
}
