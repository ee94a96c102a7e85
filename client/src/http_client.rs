//! One HTTP/1.1 request on a fresh connection, for the join API and for scraping `/metrics`:
//! plain `http://host:port/path` addresses only (the generator talks to servers next to it).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Sends `method` to `url` with `body` (JSON) if any; returns the status and at most
/// `max_body` bytes of the answer (a longer answer is an error).
pub async fn request(
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
    max_body: usize,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: Uri = url.parse()?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// addresses are supported"
    );
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("no host in the address"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, authority.port_u16().unwrap_or(80))).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("HTTP connection: {e}");
        }
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority.as_str());
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}
