//! E-mail for `/auth/v1` (magic links and codes, recovery): SMTP with
//! STARTTLS, implicit TLS, or plain for local relays; templates with
//! Supabase's variables (`{{ .ConfirmationURL }}`, `{{ .Token }}`,
//! `{{ .TokenHash }}`, `{{ .SiteURL }}`, `{{ .Email }}`, `{{ .RedirectTo }}`),
//! `{{ .NewEmail }}`), editable as files in `auth.templates_dir`
//! (`magic_link.html`, `recovery.html`, `confirmation.html`, `invite.html`,
//! `email_change.html`, `reauthentication.html`).
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Auth;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    sender: Mailbox,
    templates_dir: Option<std::path::PathBuf>,
}

/// Which e-mail, with its default subject and body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    MagicLink,
    Recovery,
    Confirmation,
    Invite,
    EmailChange,
    Reauthentication,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::MagicLink => "magic_link.html",
            Kind::Recovery => "recovery.html",
            Kind::Confirmation => "confirmation.html",
            Kind::Invite => "invite.html",
            Kind::EmailChange => "email_change.html",
            Kind::Reauthentication => "reauthentication.html",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Kind::MagicLink => "Your sign-in link",
            Kind::Recovery => "Reset your password",
            Kind::Confirmation => "Confirm your e-mail address",
            Kind::Invite => "You have been invited",
            Kind::EmailChange => "Confirm the change of your e-mail address",
            Kind::Reauthentication => "Confirm it is you",
        }
    }

    fn default_body(self) -> &'static str {
        match self {
            Kind::MagicLink => {
                "<h2>Sign in</h2>\n<p><a href=\"{{ .ConfirmationURL }}\">Sign in</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::Recovery => {
                "<h2>Reset your password</h2>\n<p><a href=\"{{ .ConfirmationURL }}\">Reset password</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::Confirmation => {
                "<h2>Confirm your e-mail</h2>\n<p><a href=\"{{ .ConfirmationURL }}\">Confirm your e-mail</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::Invite => {
                "<h2>You have been invited</h2>\n<p><a href=\"{{ .ConfirmationURL }}\">Accept the invitation</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::EmailChange => {
                "<h2>Confirm the e-mail change</h2>\n<p>From {{ .Email }} to {{ .NewEmail }}.</p>\n<p><a href=\"{{ .ConfirmationURL }}\">Confirm the change</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::Reauthentication => "<h2>Confirm it is you</h2>\n<p>Enter this code: {{ .Token }}</p>\n",
        }
    }
}

/// Values substituted into a template.
pub struct Fill<'a> {
    pub confirmation_url: &'a str,
    pub token: &'a str,
    pub token_hash: &'a str,
    pub site_url: &'a str,
    pub email: &'a str,
    pub redirect_to: &'a str,
    pub new_email: &'a str,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn render(template: &str, f: &Fill<'_>) -> String {
    let mut out = template.to_string();
    for (name, value) in [
        ("ConfirmationURL", f.confirmation_url),
        ("Token", f.token),
        ("TokenHash", f.token_hash),
        ("SiteURL", f.site_url),
        ("Email", f.email),
        ("RedirectTo", f.redirect_to),
        ("NewEmail", f.new_email),
    ] {
        let value = html_escape(value);
        for pattern in [format!("{{{{ .{name} }}}}"), format!("{{{{.{name}}}}}")] {
            out = out.replace(&pattern, &value);
        }
    }
    out
}

impl Mailer {
    /// `None` when no SMTP host is configured.
    pub fn new(config: &Auth) -> Result<Option<Mailer>, String> {
        let Some(host) = config.smtp_host.as_deref() else { return Ok(None) };
        let builder = match config.smtp_tls.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            _ => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)),
        }
        .map_err(|e| format!("auth.smtp_host: {e}"))?;
        let mut builder = builder.port(config.smtp_port);
        if let (Some(user), Some(pass)) = (&config.smtp_user, &config.smtp_pass) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        let sender = config.smtp_sender.parse().map_err(|e| format!("auth.smtp_sender: {e}"))?;
        Ok(Some(Mailer { transport: builder.build(), sender, templates_dir: config.templates_dir.clone() }))
    }

    fn template(&self, kind: Kind) -> String {
        self.templates_dir
            .as_ref()
            .and_then(|dir| std::fs::read_to_string(dir.join(kind.file())).ok())
            .unwrap_or_else(|| kind.default_body().to_string())
    }

    /// Sends one e-mail. Errors say whether the address itself was refused
    /// (unparseable, or a permanent 5xx from the relay, as for an unknown
    /// mailbox): `SendError::Address`, which GoTrue answers 400.
    pub async fn send(&self, to: &str, kind: Kind, fill: &Fill<'_>) -> Result<(), SendError> {
        let body = render(&self.template(kind), fill);
        let recipient = to.parse().map_err(|e| SendError::Address(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.sender.clone())
            .to(recipient)
            .subject(kind.subject())
            .header(ContentType::TEXT_HTML)
            .body(body)
            .map_err(|e| SendError::Other(e.to_string()))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            if e.is_permanent() {
                SendError::Address(e.to_string())
            } else {
                SendError::Other(e.to_string())
            }
        })
    }
}

/// Why an e-mail was not sent.
#[derive(Debug)]
pub enum SendError {
    /// The relay refused the recipient for good, or the address does not parse.
    Address(String),
    /// Anything else: the relay could not be reached, refused us, timed out.
    Other(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Address(e) => write!(f, "address refused: {e}"),
            SendError::Other(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_supabase_variables_escaped() {
        let f = Fill {
            confirmation_url: "https://x/verify?a=1&b=2",
            token: "123456",
            token_hash: "h",
            site_url: "https://x",
            email: "a<b@example.com",
            redirect_to: "",
            new_email: "",
        };
        let out = render("<a href=\"{{ .ConfirmationURL }}\">{{.Token}}</a> {{ .Email }}", &f);
        assert_eq!(out, "<a href=\"https://x/verify?a=1&amp;b=2\">123456</a> a&lt;b@example.com");
    }
}
