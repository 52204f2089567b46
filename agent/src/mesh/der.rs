//! The few X.509 fields the mesh reads that webpki does not hand out: URI
//! SANs, validity, basic constraints, the subject key identifier, the subject
//! name and public key as raw bytes.
//!
//! Why not `x509-parser`: it would bring a parser stack (nom, asn1-rs,
//! der-parser, proc macros) into the static agent for six fields of
//! certificates that webpki has already verified (peers) or that the agent
//! checks itself against webpki right after (the node CA, see `node_ca`).
//! This reader only walks definite-length DER with low tag numbers, which is
//! all RFC 5280 certificates use, and refuses anything else.

use std::time::{Duration, SystemTime};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `uniformResourceIdentifier [6] IA5String`, implicitly tagged.
const GENERAL_NAME_URI: u8 = 0x86;

pub const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
pub const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
pub const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
#[cfg(test)]
pub const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct DerError(&'static str);

/// One type-length-value.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub body: &'a [u8],
    /// Tag and length included: what DER compares byte for byte.
    pub whole: &'a [u8],
}

/// Reads one TLV off the front of `input`.
pub fn next<'a>(input: &mut &'a [u8]) -> Result<Tlv<'a>, DerError> {
    let all = *input;
    let (&tag, rest) = all.split_first().ok_or(DerError("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(DerError("high tag numbers are not used in certificates"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(DerError("truncated length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(DerError("unsupported length"));
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return Err(DerError("truncated value"));
    }
    let header = all.len() - rest.len();
    *input = &rest[len..];
    Ok(Tlv {
        tag,
        body: &rest[..len],
        whole: &all[..header + len],
    })
}

fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &'static str) -> Result<Tlv<'a>, DerError> {
    let tlv = next(input)?;
    if tlv.tag != tag {
        return Err(DerError(what));
    }
    Ok(tlv)
}

/// An extension: its OID's content bytes and its value (the content of the
/// OCTET STRING). Criticality is not kept: webpki has refused unknown
/// critical extensions before anything here reads a peer's.
#[derive(Debug, Clone, Copy)]
pub struct Extension<'a> {
    pub oid: &'a [u8],
    pub value: &'a [u8],
}

/// What the mesh reads from one certificate.
#[derive(Debug, Clone)]
pub struct CertFields<'a> {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The issuer Name, tag and length included.
    pub issuer: &'a [u8],
    /// The subject Name, tag and length included.
    pub subject: &'a [u8],
    /// SubjectPublicKeyInfo, tag and length included.
    pub spki: &'a [u8],
    pub extensions: Vec<Extension<'a>>,
}

impl<'a> CertFields<'a> {
    pub fn parse(cert: &'a [u8]) -> Result<Self, DerError> {
        let mut input = cert;
        let outer = expect(&mut input, SEQUENCE, "not a SEQUENCE")?;
        let mut cert_body = outer.body;
        let tbs = expect(&mut cert_body, SEQUENCE, "no tbsCertificate")?;
        let mut t = tbs.body;
        let mut field = next(&mut t)?;
        if field.tag == VERSION {
            field = next(&mut t)?;
        }
        if field.tag != INTEGER {
            return Err(DerError("no serial number"));
        }
        expect(&mut t, SEQUENCE, "no signature algorithm")?;
        let issuer = expect(&mut t, SEQUENCE, "no issuer")?.whole;
        let validity = expect(&mut t, SEQUENCE, "no validity")?;
        let mut v = validity.body;
        let not_before = time(next(&mut v)?)?;
        let not_after = time(next(&mut v)?)?;
        let subject = expect(&mut t, SEQUENCE, "no subject")?.whole;
        let spki = expect(&mut t, SEQUENCE, "no subjectPublicKeyInfo")?.whole;
        let mut extensions = Vec::new();
        while !t.is_empty() {
            let field = next(&mut t)?;
            if field.tag != EXTENSIONS {
                continue; // issuerUniqueID, subjectUniqueID: unused
            }
            let mut body = field.body;
            let mut list = expect(&mut body, SEQUENCE, "extensions are not a SEQUENCE")?.body;
            while !list.is_empty() {
                let mut ext = expect(&mut list, SEQUENCE, "extension is not a SEQUENCE")?.body;
                let oid = expect(&mut ext, OID, "extension without OID")?.body;
                let mut value = next(&mut ext)?;
                if value.tag == BOOLEAN {
                    value = next(&mut ext)?; // critical
                }
                if value.tag != OCTET_STRING {
                    return Err(DerError("extension value is not an OCTET STRING"));
                }
                extensions.push(Extension {
                    oid,
                    value: value.body,
                });
            }
        }
        Ok(Self {
            not_before,
            not_after,
            issuer,
            subject,
            spki,
            extensions,
        })
    }

    pub fn extension(&self, oid: &[u8]) -> Option<&Extension<'a>> {
        self.extensions.iter().find(|e| e.oid == oid)
    }

    /// Every URI in the subject alternative names.
    pub fn uri_sans(&self) -> Result<Vec<&'a str>, DerError> {
        let Some(ext) = self.extension(OID_SUBJECT_ALT_NAME) else {
            return Ok(Vec::new());
        };
        let mut value = ext.value;
        let mut names = expect(&mut value, SEQUENCE, "SAN is not a SEQUENCE")?.body;
        let mut uris = Vec::new();
        while !names.is_empty() {
            let name = next(&mut names)?;
            if name.tag == GENERAL_NAME_URI {
                // IA5String is ASCII; anything else is malformed, not a name.
                let uri = std::str::from_utf8(name.body)
                    .ok()
                    .filter(|s| s.is_ascii())
                    .ok_or(DerError("URI SAN is not ASCII"))?;
                uris.push(uri);
            }
        }
        Ok(uris)
    }

    /// basicConstraints cA; false when the extension is absent.
    pub fn is_ca(&self) -> Result<bool, DerError> {
        let Some(ext) = self.extension(OID_BASIC_CONSTRAINTS) else {
            return Ok(false);
        };
        let mut value = ext.value;
        let mut bc = expect(&mut value, SEQUENCE, "basicConstraints is not a SEQUENCE")?.body;
        if bc.is_empty() {
            return Ok(false);
        }
        let first = next(&mut bc)?;
        Ok(first.tag == BOOLEAN && first.body != [0])
    }

    pub fn subject_key_id(&self) -> Result<Option<&'a [u8]>, DerError> {
        let Some(ext) = self.extension(OID_SUBJECT_KEY_ID) else {
            return Ok(None);
        };
        let mut value = ext.value;
        Ok(Some(
            expect(&mut value, OCTET_STRING, "subjectKeyIdentifier")?.body,
        ))
    }
}

/// The issuer Name of a certificate, tag and length included.
pub fn issuer_name(cert: &[u8]) -> Result<&[u8], DerError> {
    Ok(CertFields::parse(cert)?.issuer)
}

/// One attribute of a Name: its OID's content bytes, the value's string tag
/// and bytes.
#[derive(Debug, Clone, Copy)]
pub struct NameAttribute<'a> {
    pub oid: &'a [u8],
    pub tag: u8,
    pub value: &'a [u8],
}

/// The attributes of a Name (as `CertFields::subject` holds it), one per RDN;
/// multi-valued RDNs are refused, nothing issues them in practice and rcgen
/// could not write them back.
pub fn name_attributes(name: &[u8]) -> Result<Vec<NameAttribute<'_>>, DerError> {
    let mut input = name;
    let mut rdns = expect(&mut input, SEQUENCE, "Name is not a SEQUENCE")?.body;
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let mut set = expect(&mut rdns, SET, "RDN is not a SET")?.body;
        let mut atv = expect(&mut set, SEQUENCE, "attribute is not a SEQUENCE")?.body;
        if !set.is_empty() {
            return Err(DerError("multi-valued RDN"));
        }
        let oid = expect(&mut atv, OID, "attribute without OID")?.body;
        let value = next(&mut atv)?;
        out.push(NameAttribute {
            oid,
            tag: value.tag,
            value: value.body,
        });
    }
    Ok(out)
}

/// Decodes an OID's content bytes into arcs.
pub fn oid_arcs(oid: &[u8]) -> Result<Vec<u64>, DerError> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = acc.checked_mul(128).ok_or(DerError("OID arc too large"))? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    if arcs.is_empty() || oid.last().is_some_and(|b| b & 0x80 != 0) {
        return Err(DerError("truncated OID"));
    }
    Ok(arcs)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as RFC
/// 5280 restricts them.
fn time(tlv: Tlv<'_>) -> Result<SystemTime, DerError> {
    let bad = DerError("bad time");
    let s = std::str::from_utf8(tlv.body).map_err(|_| bad.clone())?;
    let (year, rest) = match (tlv.tag, s.len()) {
        (UTC_TIME, 13) => {
            let yy: i64 = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&s[..4])?, &s[4..]),
        _ => return Err(bad),
    };
    if !rest.ends_with('Z') {
        return Err(bad);
    }
    let month: i64 = digits(&rest[0..2])?;
    let day: i64 = digits(&rest[2..4])?;
    let hour: i64 = digits(&rest[4..6])?;
    let minute: i64 = digits(&rest[6..8])?;
    let second: i64 = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad);
    }
    if second > 60 {
        return Err(bad);
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).map_err(|_| DerError("time before 1970"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn digits(s: &str) -> Result<i64, DerError> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DerError("bad time"));
    }
    s.parse().map_err(|_| DerError("bad time"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era-based
/// method: 400-year eras of 146,097 days, years starting in March so the
/// leap day comes last).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn oid_decoding() {
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]).ok(), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]).ok(),
            Some(vec![1, 2, 840, 113_549])
        );
        assert!(oid_arcs(&[0x86]).is_err());
    }
}
