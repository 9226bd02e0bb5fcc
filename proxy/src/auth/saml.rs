//! SAML 2.0 single sign-on, the service-provider side, as Supabase Auth
//! offers it: `POST /sso` sends the browser to the identity provider with an
//! AuthnRequest (HTTP-Redirect binding), the provider posts a signed
//! Response to `/sso/saml/acs`, and the user gets a session (or a PKCE code)
//! like after an OAuth sign-in. `/sso/saml/metadata` describes Fluxbase to
//! identity providers.
//!
//! Signatures are checked by xmlsec (through samael), against the signing
//! certificates of the provider's metadata; everything unsigned is dropped
//! before the response is read, so a wrapped or injected assertion does not
//! count. Then: Destination, InResponseTo (the request this sign-in
//! started), issuer, audience, validity window, and the bearer subject
//! confirmation (recipient, InResponseTo, NotOnOrAfter). IdP-initiated
//! sign-ins are refused: there is no request to bind them to.
use samael::metadata::EntityDescriptor;
use samael::schema::Assertion;
use samael::service_provider::{ServiceProvider, ServiceProviderBuilder};
use samael::traits::ToXml;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

use crate::config::Auth as AuthConfig;
use crate::error::ApiError;

const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// Attribute names that carry an e-mail address, in order of preference.
const EMAIL_ATTRIBUTES: [&str; 4] = [
    "email",
    "mail",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
];

pub struct IdentityProvider {
    pub name: String,
    domains: Vec<String>,
    email_attribute: Option<String>,
    sp: ServiceProvider,
    sso_url: String,
}

pub struct Saml {
    providers: HashMap<String, IdentityProvider>,
    pub acs_url: String,
}

/// Who the identity provider vouched for.
pub struct SamlIdentity {
    pub name_id: String,
    pub email: Option<String>,
    pub data: Value,
}

impl Saml {
    /// `None` without `[auth.saml_providers]`. Each provider's metadata must
    /// parse and carry signing certificates and an HTTP-Redirect SSO URL.
    pub fn new(config: &AuthConfig, public_url: &str) -> Result<Option<Saml>, String> {
        if config.saml_providers.values().all(|p| p.enabled == Some(false)) {
            return Ok(None);
        }
        let entity_id = format!("{public_url}/auth/v1/sso/saml/metadata");
        let acs_url = format!("{public_url}/auth/v1/sso/saml/acs");
        let mut providers = HashMap::new();
        for (name, p) in &config.saml_providers {
            if p.enabled == Some(false) {
                continue;
            }
            let xml = match (&p.metadata_xml, &p.metadata_file) {
                (Some(xml), _) => xml.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| format!("saml provider {name}: metadata_file {}: {e}", path.display()))?,
                (None, None) => return Err(format!("saml provider {name}: set metadata_file or metadata_xml")),
            };
            let metadata: EntityDescriptor =
                xml.parse().map_err(|e| format!("saml provider {name}: metadata does not parse: {e}"))?;
            let sp = ServiceProviderBuilder::default()
                .entity_id(entity_id.clone())
                .acs_url(acs_url.clone())
                .idp_metadata(metadata)
                .allow_idp_initiated(false)
                .build()
                .map_err(|e| format!("saml provider {name}: {e}"))?;
            match sp.idp_signing_certs() {
                Ok(Some(certs)) if !certs.is_empty() => {}
                _ => return Err(format!("saml provider {name}: the metadata has no signing certificate")),
            }
            let sso_url = sp
                .sso_binding_location(REDIRECT_BINDING)
                .ok_or_else(|| format!("saml provider {name}: no HTTP-Redirect SingleSignOnService in the metadata"))?;
            let domains = p.domains.iter().map(|d| d.trim().to_ascii_lowercase()).collect();
            providers.insert(
                name.clone(),
                IdentityProvider {
                    name: name.clone(),
                    domains,
                    email_attribute: p.email_attribute.clone(),
                    sp,
                    sso_url,
                },
            );
        }
        Ok(Some(Saml { providers, acs_url }))
    }

    /// The provider of `provider_id` (its name), or the one that owns `domain`.
    pub fn find(&self, provider_id: Option<&str>, domain: Option<&str>) -> Result<&IdentityProvider, ApiError> {
        let found = match (provider_id, domain) {
            (Some(id), _) => self.providers.get(id),
            (None, Some(domain)) => {
                let domain = domain.trim().to_ascii_lowercase();
                self.providers.values().find(|p| p.domains.contains(&domain))
            }
            (None, None) => {
                return Err(ApiError::auth(400, "validation_failed", "A domain or a provider_id is required"))
            }
        };
        found.ok_or_else(|| ApiError::auth(404, "sso_provider_not_found", "No SSO provider assigned for this domain"))
    }

    pub fn get(&self, name: &str) -> Option<&IdentityProvider> {
        self.providers.get(name)
    }

    /// Fluxbase as a service provider: entity id, ACS (HTTP-POST), signed
    /// assertions wanted.
    pub fn metadata_xml(&self) -> Result<String, String> {
        let sp = self.providers.values().next().map(|p| p.sp.clone()).unwrap_or_default();
        let sp = ServiceProvider { slo_url: Some(self.acs_url.clone()), ..sp };
        let descriptor = sp.metadata().map_err(|e| e.to_string())?;
        descriptor.to_string().map_err(|e| e.to_string())
    }
}

impl IdentityProvider {
    /// An AuthnRequest with `request_id` and the provider's URL carrying it
    /// (deflated, base64) and `relay_state`.
    pub fn authn_url(&self, request_id: &str, relay_state: &str) -> Result<String, String> {
        let mut request = self.sp.make_authentication_request(&self.sso_url).map_err(|e| e.to_string())?;
        request.id = request_id.to_string();
        let url = request.redirect(relay_state).map_err(|e| e.to_string())?.ok_or("no destination")?;
        Ok(url.to_string())
    }

    /// Verifies a base64 `SAMLResponse` that answers `request_id`.
    pub fn verify(&self, saml_response: &str, request_id: &str, acs_url: &str) -> Result<SamlIdentity, String> {
        let assertion = self
            .sp
            // Some providers wrap the base64 in lines.
            .parse_base64_response(&saml_response.split_whitespace().collect::<String>(), Some(&[request_id]))
            .map_err(|e| format!("response refused: {e}"))?;
        check_bearer(&assertion, request_id, acs_url)?;
        // samael checks the audience only when a restriction is there; one must be.
        let restricted =
            assertion.conditions.as_ref().and_then(|c| c.audience_restrictions.as_ref()).is_some_and(|r| !r.is_empty());
        if !restricted {
            return Err("the assertion has no AudienceRestriction".into());
        }
        let identity = self.identity(&assertion)?;
        // A provider speaks for its own domains only.
        if let Some(email) = &identity.email {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !self.domains.is_empty() && !self.domains.iter().any(|d| d == domain) {
                return Err(format!("e-mail domain {domain:?} is not one of this provider's domains"));
            }
        }
        Ok(identity)
    }

    fn identity(&self, assertion: &Assertion) -> Result<SamlIdentity, String> {
        let name_id = assertion
            .subject
            .as_ref()
            .and_then(|s| s.name_id.as_ref())
            .map(|n| n.value.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or("the assertion names no subject (NameID)")?;
        let mut attributes = Map::new();
        for statement in assertion.attribute_statements.iter().flatten() {
            for attribute in &statement.attributes {
                let Some(name) = attribute.name.clone().or_else(|| attribute.friendly_name.clone()) else { continue };
                let values: Vec<Value> =
                    attribute.values.iter().filter_map(|v| v.value.clone()).map(Value::String).collect();
                let value = if values.len() == 1 { values[0].clone() } else { Value::Array(values) };
                attributes.insert(name, value);
            }
        }
        let first = |name: &str| match attributes.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let email = match &self.email_attribute {
            Some(name) => first(name),
            None => EMAIL_ATTRIBUTES.iter().find_map(|n| first(n)),
        }
        .or_else(|| name_id.contains('@').then(|| name_id.clone()))
        .map(|e| e.trim().to_lowercase());
        let data = json!({
            "iss": self.sp.idp_metadata.entity_id,
            "sub": name_id,
            "provider_id": name_id,
            "email": email,
            "email_verified": email.is_some(),
            "phone_verified": false,
            "custom_claims": attributes,
        });
        Ok(SamlIdentity { name_id, email, data })
    }
}

/// SAML profiles §4.1.4.2/§4.1.4.3: a bearer confirmation for this ACS and
/// request, not expired.
fn check_bearer(assertion: &Assertion, request_id: &str, acs_url: &str) -> Result<(), String> {
    let confirmations = assertion.subject.as_ref().and_then(|s| s.subject_confirmations.as_ref());
    let now = chrono::Utc::now();
    let ok = confirmations.into_iter().flatten().any(|c| {
        let Some(data) = &c.subject_confirmation_data else { return false };
        c.method.as_deref() == Some(BEARER)
            && data.recipient.as_deref() == Some(acs_url)
            // Required, not just checked when present: it ties the assertion
            // itself (not only the Response around it) to this sign-in.
            && data.in_response_to.as_deref() == Some(request_id)
            && data.not_on_or_after.is_some_and(|t| t > now)
            && data.not_before.is_none_or(|t| t <= now + chrono::Duration::seconds(180))
    });
    if ok {
        Ok(())
    } else {
        Err("no valid bearer SubjectConfirmation for this service provider".into())
    }
}
