//! [`SimClient`]: a worker's HTTP/1.1 keep-alive connection to the simulated provider. It sends
//! one call's token counts and returns the answer's status, headers and body.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, task::JoinHandle};

/// The provider's answer.
#[derive(Clone, Debug)]
pub struct SimResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// JSON body.
    pub body: Bytes,
}

/// One connection to a [`SimProvider`](crate::SimProvider).
pub struct SimClient {
    sender: SendRequest<Full<Bytes>>,
    connection: JoinHandle<()>,
    host: String,
}

/// A client error: I/O or HTTP.
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

impl SimClient {
    /// Connects to the provider at `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(async move {
            // Ends when the client or the provider closes the connection.
            let _closed = connection.await;
        });
        Ok(Self {
            sender,
            connection,
            host: addr.to_string(),
        })
    }

    /// Makes one call that spends `input_tokens` and generates `output_tokens`.
    pub async fn call(
        &mut self,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<SimResponse, ClientError> {
        let body = format!(r#"{{"input_tokens":{input_tokens},"output_tokens":{output_tokens}}}"#);
        let req = Request::post("/v1/chat/completions")
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(SimResponse {
            status,
            headers,
            body,
        })
    }
}

impl Drop for SimClient {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl std::fmt::Debug for SimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClient")
            .field("host", &self.host)
            .finish()
    }
}
