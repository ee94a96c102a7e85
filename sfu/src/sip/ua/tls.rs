//! SIP over TLS: the node's TLS listener (its certificate), the roots it trusts when it dials a
//! `sips:` address (or one with `transport=tls`), and the Contact a call over TLS gives, so
//! that the far end's requests in the call come back over TLS too.

use rsipstack::sip::{Auth, Param, Scheme, Transport, Uri};
use rsipstack::transport::{TlsConfig, TlsListenerConnection, TransportLayer};
use std::net::SocketAddr;

/// Where Debian keeps the public roots (package ca-certificates), trusted when no
/// `--sip-tls-ca` is given.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The node's SIP over TLS.
#[derive(Clone, Default)]
pub struct SipTls {
    /// Listen for SIP over TLS here with this certificate chain and private key (PEM); none:
    /// TLS for calls out only.
    pub listener: Option<TlsListener>,
    /// The roots (PEM) a far end's certificate must chain to; none: no call over TLS can be
    /// placed.
    pub roots: Option<Vec<u8>>,
}

/// A TLS listener's address and identity.
#[derive(Clone)]
pub struct TlsListener {
    /// Where it listens (a specific address: it is written in Contact).
    pub listen: SocketAddr,
    /// Its certificate chain, PEM.
    pub certificate: Vec<u8>,
    /// Its private key, PEM (PKCS#8 or PKCS#1).
    pub key: Vec<u8>,
}

/// Private keys are never written to logs.
impl std::fmt::Debug for SipTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipTls")
            .field("listen", &self.listener.as_ref().map(|l| l.listen))
            .field("roots", &self.roots.as_ref().map(Vec::len))
            .finish()
    }
}

impl SipTls {
    /// Adds the TLS listener to `transports`, and the roots for calls out.
    pub(super) async fn install(&self, transports: &mut TransportLayer) -> std::io::Result<()> {
        if let Some(roots) = &self.roots {
            transports.set_tls_config(TlsConfig {
                ca_certs: Some(roots.clone()),
                ..Default::default()
            });
        }
        if let Some(listener) = &self.listener {
            let config = TlsConfig {
                cert: Some(listener.certificate.clone()),
                key: Some(listener.key.clone()),
                ..Default::default()
            };
            let tls = TlsListenerConnection::new(listener.listen, None, config)
                .await
                .map_err(|e| {
                    std::io::Error::other(format!("SIP TLS on {}: {e}", listener.listen))
                })?;
            transports.add_transport(tls.into());
        }
        Ok(())
    }

    /// The Contact of a call over TLS: `sip:USER@LISTENER;transport=tls`; none without a
    /// listener (the far end's requests in the call then come over UDP).
    pub(super) fn contact(&self, user: &str) -> Option<Uri> {
        let listener = self.listener.as_ref()?;
        Some(Uri {
            scheme: Some(Scheme::Sip),
            auth: Some(Auth {
                user: user.to_string(),
                password: None,
            }),
            host_with_port: listener.listen.into(),
            params: vec![Param::Transport(Transport::Tls)],
            headers: Vec::new(),
        })
    }
}

/// Whether a call to `target` goes over TLS: a `sips:` address (given `transport=tls` here,
/// which is what picks the transport), or one that names `transport=tls`.
pub(super) fn over_tls(target: &mut Uri) -> bool {
    let named = target.params.iter().find_map(|p| match p {
        Param::Transport(transport) => Some(*transport),
        _ => None,
    });
    match (&target.scheme, named) {
        (_, Some(transport)) => transport == Transport::Tls,
        (Some(Scheme::Sips), None) => {
            target.params.push(Param::Transport(Transport::Tls));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sips_and_transport_tls_go_over_tls_and_nothing_else_does() {
        let tls = |text: &str| {
            let mut uri = Uri::try_from(text).unwrap();
            let over = over_tls(&mut uri);
            (over, uri.to_string())
        };
        let (over, uri) = tls("sips:room@192.0.2.7:5061");
        assert!(over && uri.contains("transport=TLS"), "{uri}");
        assert!(tls("sip:room@192.0.2.7:5061;transport=tls").0);
        assert!(!tls("sip:room@192.0.2.7").0);
        assert!(!tls("sip:room@192.0.2.7;transport=tcp").0);
        assert!(
            !tls("sips:room@192.0.2.7;transport=tcp").0,
            "as the address says"
        );
    }

    #[test]
    fn a_call_over_tls_gives_the_listeners_contact() {
        let tls = SipTls {
            listener: Some(TlsListener {
                listen: "192.0.2.5:5061".parse().unwrap(),
                certificate: Vec::new(),
                key: b"secret".to_vec(),
            }),
            roots: None,
        };
        let contact = tls.contact("kaskade").unwrap().to_string();
        assert_eq!(contact, "sip:kaskade@192.0.2.5:5061;transport=TLS");
        assert!(!format!("{tls:?}").contains("secret"));
        assert!(SipTls::default().contact("kaskade").is_none());
    }
}
