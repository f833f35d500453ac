//! A connection: transport set-up (TCP, Unix socket, TLS), startup, authentication, message
//! exchange and simple queries.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::conninfo::{ChannelBindingMode, Host, Resolved, Secret, SslMode};
use crate::error::{DbError, Error, Result};
use crate::message::{decode, split_message, AuthRequest, Backend, Column, Split};
use crate::transport::Transport;
use crate::{pgpass, tls};

/// Receive buffer growth step.
const READ_CHUNK: usize = 256 * 1024;

/// Called for every NoticeResponse (WARNING, NOTICE, ...).
pub type NoticeHandler = Box<dyn FnMut(&DbError) + Send>;

/// An open, authenticated connection.
pub struct Connection {
    io: Transport,
    rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    parameters: HashMap<String, String>,
    cancel: Option<CancelToken>,
    notice: NoticeHandler,
    target: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// One result set of a simple query.
#[derive(Clone, Debug, Default)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<Bytes>>>,
    pub tag: String,
}

impl ResultSet {
    /// The value at (`row`, `col`) as text; `None` for NULL or out of range.
    pub fn text(&self, row: usize, col: usize) -> Option<&str> {
        let v = self.rows.get(row)?.get(col)?.as_ref()?;
        std::str::from_utf8(v).ok()
    }
}

/// What is needed to cancel the running query of a connection from elsewhere.
#[derive(Clone, Debug)]
pub struct CancelToken {
    host: Host,
    port: u16,
    connect_addr: Option<String>,
    pid: i32,
    key: Bytes,
}

impl CancelToken {
    /// Sends a CancelRequest on a new connection. The server answers by closing it; whether
    /// anything was cancelled shows up on the original connection.
    pub async fn cancel(&self) -> Result<()> {
        let mut msg = BytesMut::new();
        msg.extend_from_slice(&((12 + self.key.len()) as u32).to_be_bytes());
        msg.extend_from_slice(&80877102u32.to_be_bytes());
        msg.extend_from_slice(&self.pid.to_be_bytes());
        msg.extend_from_slice(&self.key);
        let mut io = open_socket(&self.host, self.port, self.connect_addr.as_deref()).await?;
        io.write_all(&msg).await?;
        let mut sink = [0u8; 16];
        let _ = io.read(&mut sink).await;
        Ok(())
    }
}

async fn open_socket(host: &Host, port: u16, addr: Option<&str>) -> Result<Transport> {
    match host {
        Host::Unix(dir) => {
            let path: PathBuf = dir.join(format!(".s.PGSQL.{port}"));
            let s = UnixStream::connect(&path)
                .await
                .map_err(|source| Error::Connect {
                    target: format!("socket \"{}\"", path.display()),
                    source,
                })?;
            Ok(Transport::Unix(s))
        }
        Host::Tcp(h) => {
            let a = addr.unwrap_or(h);
            let s = TcpStream::connect((a, port))
                .await
                .map_err(|source| Error::Connect {
                    target: format!("{a}:{port}"),
                    source,
                })?;
            let _ = s.set_nodelay(true);
            Ok(Transport::Tcp(s))
        }
    }
}

impl Connection {
    /// Connects to the first host of `cfg` that accepts, authenticating as `cfg.user`.
    pub async fn connect(cfg: &Resolved) -> Result<Connection> {
        let mut last = None;
        for (host, port) in &cfg.hosts {
            let attempt = Self::connect_host(cfg, host, *port);
            let res = match cfg.connect_timeout {
                Some(t) => match tokio::time::timeout(t, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout(format!("{host} port {port}"))),
                },
                None => attempt.await,
            };
            match res {
                Ok(c) => return Ok(c),
                // A server that answered with an error is the answer; try others only when
                // the host could not be reached at all.
                Err(e @ (Error::Db(_) | Error::Auth(_) | Error::Tls(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no host to connect to".into())))
    }

    async fn connect_host(cfg: &Resolved, host: &Host, port: u16) -> Result<Connection> {
        let is_unix = matches!(host, Host::Unix(_));
        if is_unix || cfg.sslmode == SslMode::Disable {
            return Self::startup(cfg, host, port, false).await;
        }
        if cfg.sslmode == SslMode::Allow {
            return match Self::startup(cfg, host, port, false).await {
                Err(Error::Db(e)) if e.code == "28000" => {
                    Self::startup(cfg, host, port, true).await
                }
                other => other,
            };
        }
        Self::startup(cfg, host, port, true).await
    }

    async fn startup(cfg: &Resolved, host: &Host, port: u16, try_tls: bool) -> Result<Connection> {
        let mut io = open_socket(host, port, cfg.hostaddr.as_deref()).await?;
        let mut end_point = None;
        if try_tls {
            let Transport::Tcp(mut tcp) = io else {
                return Err(Error::Tls("TLS is only used over TCP".into()));
            };
            let mut req = BytesMut::new();
            frontend::ssl_request(&mut req);
            tcp.write_all(&req).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer)
                .await
                .map_err(|_| Error::Closed)?;
            match answer[0] {
                b'S' => {
                    let Host::Tcp(name) = host else {
                        return Err(Error::Tls("TLS is only used over TCP".into()));
                    };
                    let connector = tokio_rustls::TlsConnector::from(tls::client_config(cfg)?);
                    let stream = connector
                        .connect(tls::server_name(name)?, tcp)
                        .await
                        .map_err(|e| {
                            Error::Tls(format!("handshake with {name}:{port} failed: {e}"))
                        })?;
                    end_point = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| tls::server_end_point(c));
                    io = Transport::Tls(Box::new(stream));
                }
                b'N' if matches!(cfg.sslmode, SslMode::Prefer | SslMode::Allow) => {
                    io = Transport::Tcp(tcp)
                }
                b'N' => {
                    return Err(Error::Tls(format!(
                        "server {host}:{port} does not support SSL, but sslmode={:?} requires it",
                        cfg.sslmode
                    )))
                }
                other => {
                    return Err(Error::protocol(format!(
                        "unexpected answer 0x{other:02x} to SSLRequest"
                    )))
                }
            }
        }
        let mut conn = Connection {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(8 * 1024),
            parameters: HashMap::new(),
            cancel: None,
            notice: Box::new(log_notice),
            target: format!("{host} port {port}"),
        };
        let mut params: Vec<(&str, &str)> = vec![("user", &cfg.user), ("database", &cfg.dbname)];
        if let Some(a) = &cfg.application_name {
            params.push(("application_name", a));
        }
        if let Some(r) = &cfg.replication {
            params.push(("replication", r));
        }
        if let Some(o) = &cfg.options {
            params.push(("options", o));
        }
        params.push(("client_encoding", "UTF8"));
        frontend::startup_message(params, &mut conn.wbuf)?;
        conn.flush().await?;
        conn.authenticate(cfg, host, port, end_point).await?;
        // Wait for BackendKeyData and ReadyForQuery.
        loop {
            match conn.recv().await? {
                Backend::KeyData { pid, key } => {
                    conn.cancel = Some(CancelToken {
                        host: host.clone(),
                        port,
                        connect_addr: cfg.hostaddr.clone(),
                        pid,
                        key,
                    })
                }
                Backend::ReadyForQuery(_) => break,
                Backend::NegotiateProtocolVersion => {}
                Backend::Error(e) => return Err(Error::Db(e)),
                m => {
                    return Err(Error::protocol(format!(
                        "unexpected {} during startup",
                        m.name()
                    )))
                }
            }
        }
        tracing::debug!(target = %conn.target, "connected");
        Ok(conn)
    }

    async fn authenticate(
        &mut self,
        cfg: &Resolved,
        host: &Host,
        port: u16,
        end_point: Option<Vec<u8>>,
    ) -> Result<()> {
        let password = || -> Result<Secret> {
            if let Some(p) = &cfg.password {
                return Ok(p.clone());
            }
            let pass_host = match host {
                Host::Tcp(h) => h.as_str(),
                Host::Unix(_) => "localhost",
            };
            cfg.passfile
                .as_deref()
                .and_then(|f| pgpass::lookup(f, pass_host, port, &cfg.dbname, &cfg.user))
                .ok_or_else(|| {
                    Error::Auth(format!(
                        "the server asked user \"{}\" for a password, but none was given (set PGPASSWORD, a password in the connection string, or a line in ~/.pgpass)",
                        cfg.user
                    ))
                })
        };
        let mut sasl_used = false;
        loop {
            let req = match self.recv().await? {
                Backend::Auth(r) => r,
                Backend::Error(e) => return Err(Error::Db(e)),
                m => {
                    return Err(Error::protocol(format!(
                        "expected an authentication request, got {}",
                        m.name()
                    )))
                }
            };
            match req {
                AuthRequest::Ok => {
                    if cfg.channel_binding == ChannelBindingMode::Require && !sasl_used {
                        return Err(Error::Auth(
                            "channel_binding=require, but the server authenticated without SCRAM channel binding".into(),
                        ));
                    }
                    return Ok(());
                }
                AuthRequest::Cleartext => {
                    self.refuse_without_binding(cfg)?;
                    frontend::password_message(password()?.expose().as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                AuthRequest::Md5(salt) => {
                    self.refuse_without_binding(cfg)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        cfg.user.as_bytes(),
                        password()?.expose().as_bytes(),
                        salt,
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                AuthRequest::Sasl(mechs) => {
                    sasl_used = true;
                    self.scram(cfg, &mechs, end_point.clone(), password()?).await?;
                }
                AuthRequest::SaslContinue(_) | AuthRequest::SaslFinal(_) => {
                    return Err(Error::protocol("SASL message outside a SASL exchange"))
                }
                AuthRequest::Other(code) => {
                    return Err(Error::Auth(format!(
                        "the server asked for authentication method {code} (GSSAPI, SSPI or Kerberos), which pgincr does not support; use password, md5 or scram-sha-256 in pg_hba.conf"
                    )))
                }
            }
        }
    }

    fn refuse_without_binding(&self, cfg: &Resolved) -> Result<()> {
        if cfg.channel_binding == ChannelBindingMode::Require {
            return Err(Error::Auth(
                "channel_binding=require, but the server asked for a password without SCRAM".into(),
            ));
        }
        Ok(())
    }

    async fn scram(
        &mut self,
        cfg: &Resolved,
        mechs: &[String],
        end_point: Option<Vec<u8>>,
        password: Secret,
    ) -> Result<()> {
        let plus = mechs.iter().any(|m| m == "SCRAM-SHA-256-PLUS");
        let plain = mechs.iter().any(|m| m == "SCRAM-SHA-256");
        let (mech, binding) = match (end_point, cfg.channel_binding) {
            (Some(ep), ChannelBindingMode::Prefer | ChannelBindingMode::Require) if plus => {
                ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(ep))
            }
            _ if cfg.channel_binding == ChannelBindingMode::Require => {
                return Err(Error::Auth(
                    "channel_binding=require, but SCRAM-SHA-256-PLUS is not available (it needs TLS and a server that offers it)".into(),
                ))
            }
            (Some(_), ChannelBindingMode::Prefer) if plain => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
            _ if plain => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
            _ => {
                return Err(Error::Auth(format!(
                    "the server offers SASL mechanisms {mechs:?}, none of which pgincr supports"
                )))
            }
        };
        let mut scram = ScramSha256::new(password.expose().as_bytes(), binding);
        frontend::sasl_initial_response(mech, scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        match self.recv().await? {
            Backend::Auth(AuthRequest::SaslContinue(data)) => scram
                .update(&data)
                .map_err(|e| Error::Auth(format!("SCRAM: {e}")))?,
            Backend::Error(e) => return Err(Error::Db(e)),
            m => {
                return Err(Error::protocol(format!(
                    "expected SASLContinue, got {}",
                    m.name()
                )))
            }
        }
        frontend::sasl_response(scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        match self.recv().await? {
            Backend::Auth(AuthRequest::SaslFinal(data)) => scram
                .finish(&data)
                .map_err(|e| Error::Auth(format!("SCRAM: the server's proof is wrong: {e}"))),
            Backend::Error(e) => Err(Error::Db(e)),
            m => Err(Error::protocol(format!(
                "expected SASLFinal, got {}",
                m.name()
            ))),
        }
    }

    /// Writes out everything queued in the write buffer.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            let buf = self.wbuf.split();
            self.io.write_all(&buf).await.map_err(closed_or_io)?;
            self.io.flush().await.map_err(closed_or_io)?;
        }
        Ok(())
    }

    /// Writes `bytes` after whatever is queued. Used for large CopyData payloads without
    /// copying them into the write buffer.
    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.flush().await?;
        self.io.write_all(bytes).await.map_err(closed_or_io)
    }

    /// The next message, with NoticeResponse and ParameterStatus handled here. Cancel-safe:
    /// a partially received message stays in the buffer.
    pub(crate) async fn recv(&mut self) -> Result<Backend> {
        loop {
            match split_message(&mut self.rbuf) {
                Split::Message(tag, body) => match decode(tag, body)? {
                    Backend::Notice(n) => (self.notice)(&n),
                    Backend::ParameterStatus(k, v) => {
                        self.parameters.insert(k, v);
                    }
                    m => return Ok(m),
                },
                Split::BadLength(tag, len) => {
                    return Err(Error::protocol(format!(
                        "message '{}' claims length {len}, beyond the {} byte limit",
                        char::from(tag),
                        crate::message::MAX_MESSAGE_LEN
                    )))
                }
                Split::Need(n) => {
                    // Grow by what arrives, not by what the length word claims. Large reads
                    // keep syscalls few, and the partial message that moves to a new buffer
                    // when frozen messages still share the old one is a small share of it.
                    self.rbuf.reserve(n.clamp(READ_CHUNK, 4 * READ_CHUNK));
                    let got = self
                        .io
                        .read_buf(&mut self.rbuf)
                        .await
                        .map_err(closed_or_io)?;
                    if got == 0 {
                        return Err(Error::Closed);
                    }
                }
            }
        }
    }

    /// A server parameter reported at startup or later (`server_version`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The server's major version number, from `server_version`.
    pub fn server_major(&self) -> Option<u32> {
        let v = self.parameter("server_version")?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }

    /// A handle that can cancel this connection's current command.
    pub fn cancel_token(&self) -> Option<CancelToken> {
        self.cancel.clone()
    }

    /// Replaces the notice handler (the default logs through `tracing`).
    pub fn set_notice_handler(&mut self, h: NoticeHandler) {
        self.notice = h;
    }

    /// Where this connection goes (for messages).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs one command with the simple query protocol and collects its result sets.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<ResultSet>> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let mut sets = Vec::new();
        let mut cur: Option<ResultSet> = None;
        let mut err = None;
        loop {
            match self.recv().await? {
                Backend::RowDescription(columns) => {
                    cur = Some(ResultSet {
                        columns,
                        ..Default::default()
                    })
                }
                Backend::DataRow(row) => match cur.as_mut() {
                    Some(c) => c.rows.push(row),
                    None => return Err(Error::protocol("DataRow without RowDescription")),
                },
                Backend::CommandComplete(tag) => {
                    let mut set = cur.take().unwrap_or_default();
                    set.tag = tag;
                    sets.push(set);
                }
                Backend::EmptyQuery => {}
                Backend::Error(e) => err = Some(e),
                Backend::ReadyForQuery(_) => {
                    return match err {
                        Some(e) => Err(Error::Db(e)),
                        None => {
                            // A RowDescription that an error cut short still counts (TIMELINE_HISTORY).
                            if let Some(c) = cur {
                                sets.push(c);
                            }
                            Ok(sets)
                        }
                    };
                }
                Backend::CopyInResponse | Backend::CopyOutResponse | Backend::CopyBothResponse => {
                    return Err(Error::protocol(format!(
                        "\"{}\" started a COPY; use the dedicated call",
                        sql.split_whitespace().next().unwrap_or("")
                    )))
                }
                m => {
                    return Err(Error::protocol(format!(
                        "unexpected {} after a query",
                        m.name()
                    )))
                }
            }
        }
    }

    /// Reads until ReadyForQuery, returning the first error seen.
    pub(crate) async fn drain_to_ready(&mut self) -> Result<Option<Box<DbError>>> {
        let mut first = None;
        loop {
            match self.recv().await? {
                Backend::ReadyForQuery(_) => return Ok(first),
                Backend::Error(e) => {
                    first.get_or_insert(e);
                }
                _ => {}
            }
        }
    }

    /// Sends Terminate and closes the connection.
    pub async fn close(mut self) -> Result<()> {
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
        Ok(())
    }
}

fn closed_or_io(e: std::io::Error) -> Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted => Error::Closed,
        _ => Error::Io(e),
    }
}

fn log_notice(n: &DbError) {
    match n.severity.as_str() {
        "WARNING" => tracing::warn!("server: {n}"),
        _ => tracing::info!("server: {n}"),
    }
}
