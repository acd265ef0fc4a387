//! A TCP proxy that can lose one reply: placed between `sluice-server` and Redis, it forwards
//! bytes both ways until armed; armed, it lets the next script call (`FCALL`, or `EVALSHA`/`EVAL`) through to
//! Redis, which runs it, and then cuts the connection when the script's answer (a RESP array)
//! comes back, so the server never sees it. That is a lost reply with the write done.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// The proxy; it stops when dropped.
pub struct LossyProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LossyProxy {
    /// Forwards 127.0.0.1:<port> to 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (a, c) = (armed.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    tokio::spawn(pump(client, server, a.clone(), c.clone()));
                }
            }
        });
        Ok(Self {
            port,
            armed,
            cut,
            task,
        })
    }

    /// Loses the reply to the next script call.
    pub fn arm(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Whether a reply was lost since [`LossyProxy::arm`].
    pub fn has_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// Forwards both ways; ends both directions when a reply is cut.
async fn pump(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>, cut: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Set once a script call has passed while armed: its answer is the one to lose.
    let pending = Arc::new(AtomicBool::new(false));
    let seen = pending.clone();
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let script = chunk.windows(4).any(|w| w.eq_ignore_ascii_case(b"EVAL"))
                || chunk.windows(5).any(|w| w.eq_ignore_ascii_case(b"FCALL"));
            if script && armed.swap(false, Ordering::SeqCst) {
                seen.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let array = chunk.first() == Some(&b'*') || chunk.windows(3).any(|w| w == b"\r\n*");
            if array && pending.load(Ordering::SeqCst) {
                // The script ran; its answer goes nowhere and the connection dies.
                cut.store(true, Ordering::SeqCst);
                return;
            }
            if client_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends both: dropping the halves closes the sockets.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
