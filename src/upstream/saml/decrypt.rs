//! `EncryptedAssertion` (XML Encryption 1.1): the content key arrives wrapped with RSA-OAEP
//! under the SP's key, the assertion under AES-CBC or AES-GCM. RSA PKCS#1 v1.5 key transport is
//! refused (Bleichenbacher), as is anything else.

use aes::cipher::{BlockDecryptMut as _, KeyIvInit as _, block_padding::NoPadding};
use roxmltree::Node;

use super::SamlError;
use super::dsig::{DigestAlgorithm, decode_base64};
use super::xml::{NS_DSIG, NS_XMLENC, NS_XMLENC11, children, element_children, is, required_child, single_child, text_content};

/// The SP's RSA key for unwrapping content keys. OAEP decryption goes through OpenSSL, whose
/// OAEP decoding is constant-time and blinded; the pure-Rust `rsa` crate's is not
/// (RUSTSEC-2023-0071), and the ciphertext here comes from anyone.
pub struct DecryptionKey(openssl::pkey::PKey<openssl::pkey::Private>);

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecryptionKey")
    }
}

impl DecryptionKey {
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, SamlError> {
        let rsa =
            openssl::rsa::Rsa::private_key_from_der(der).map_err(|_| SamlError::Decryption("the SP key is not an RSA key"))?;
        openssl::pkey::PKey::from_rsa(rsa).map(Self).map_err(|_| SamlError::Decryption("the SP key is not an RSA key"))
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SamlError> {
        openssl::pkey::PKey::private_key_from_pem(pem.as_bytes())
            .map(Self)
            .map_err(|_| SamlError::Decryption("the SP key is not a PKCS#8 PEM key"))
    }

    fn oaep_decrypt(&self, digest: DigestAlgorithm, mgf: DigestAlgorithm, wrapped: &[u8]) -> Result<Vec<u8>, SamlError> {
        let md = |algorithm: DigestAlgorithm| match algorithm {
            DigestAlgorithm::Sha1 => openssl::md::Md::sha1(),
            DigestAlgorithm::Sha256 => openssl::md::Md::sha256(),
            DigestAlgorithm::Sha384 => openssl::md::Md::sha384(),
            DigestAlgorithm::Sha512 => openssl::md::Md::sha512(),
        };
        let mut context = openssl::pkey_ctx::PkeyCtx::new(&self.0).map_err(|_| FAILED)?;
        context.decrypt_init().map_err(|_| FAILED)?;
        context.set_rsa_padding(openssl::rsa::Padding::PKCS1_OAEP).map_err(|_| FAILED)?;
        context.set_rsa_oaep_md(md(digest)).map_err(|_| FAILED)?;
        context.set_rsa_mgf1_md(md(mgf)).map_err(|_| FAILED)?;
        let mut key = Vec::new();
        context.decrypt_to_vec(wrapped, &mut key).map_err(|_| FAILED)?;
        Ok(key)
    }
}

#[derive(Debug, Clone, Copy)]
enum ContentCipher {
    Aes128Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl ContentCipher {
    fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => Some(Self::Aes128Cbc),
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => Some(Self::Aes256Cbc),
            "http://www.w3.org/2009/xmlenc11#aes128-gcm" => Some(Self::Aes128Gcm),
            "http://www.w3.org/2009/xmlenc11#aes256-gcm" => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Self::Aes128Cbc | Self::Aes128Gcm => 16,
            Self::Aes256Cbc | Self::Aes256Gcm => 32,
        }
    }
}

pub const FAILED: SamlError = SamlError::Decryption("the encrypted assertion could not be decrypted with the SP key");
/// IdPs that encrypt for several recipients send one `EncryptedKey` each; more than this is
/// not a real message, and each one may cost an RSA decryption per SP key.
const MAX_ENCRYPTED_KEYS: usize = 8;

/// The plaintext of an `EncryptedAssertion` element, decrypted with one of `sp_keys` (the
/// current encryption key and those kept during a rotation). Every failure after the structure
/// checks reads the same, so the error says nothing about where decryption went wrong.
/// AES-CBC is unauthenticated: it is taken only when `ciphertext_signed` (the Response's
/// signature covers it), or a forged ciphertext would make the SP a decryption oracle.
pub fn decrypt_assertion(
    encrypted: Node<'_, '_>,
    sp_keys: &[DecryptionKey],
    sp_entity_id: &str,
    ciphertext_signed: bool,
) -> Result<String, SamlError> {
    let data = required_child(encrypted, NS_XMLENC, "EncryptedData", "EncryptedAssertion without EncryptedData")?;
    let method = required_child(data, NS_XMLENC, "EncryptionMethod", "EncryptedData without EncryptionMethod")?;
    let cipher = method
        .attribute("Algorithm")
        .and_then(ContentCipher::from_uri)
        .ok_or(SamlError::Decryption("the content encryption algorithm is not accepted"))?;
    if matches!(cipher, ContentCipher::Aes128Cbc | ContentCipher::Aes256Cbc) && !ciphertext_signed {
        return Err(SamlError::Decryption("AES-CBC is accepted only inside a signed Response; use AES-GCM"));
    }
    // The wrapped keys sit in the data's KeyInfo or, as some IdPs send them, beside the data.
    let key_info_keys =
        single_child(data, NS_DSIG, "KeyInfo")?.map(|info| children(info, NS_XMLENC, "EncryptedKey").collect::<Vec<_>>());
    let mut wrapped_keys = key_info_keys.unwrap_or_default();
    wrapped_keys.extend(children(encrypted, NS_XMLENC, "EncryptedKey"));
    if wrapped_keys.is_empty() {
        return Err(SamlError::Decryption("the encrypted assertion carries no EncryptedKey"));
    }
    if wrapped_keys.len() > MAX_ENCRYPTED_KEYS {
        return Err(SamlError::Decryption("the encrypted assertion carries too many EncryptedKey elements"));
    }
    // A key addressed to this SP by `Recipient` is the one; without such, the unaddressed ones
    // are tried. Keys addressed to other recipients are never tried.
    let addressed: Vec<_> = wrapped_keys.iter().filter(|k| k.attribute("Recipient") == Some(sp_entity_id)).collect();
    let candidates = if addressed.is_empty() {
        wrapped_keys.iter().filter(|k| k.attribute("Recipient").is_none()).collect()
    } else {
        addressed
    };
    // Everything is read before any key is unwrapped, so no later answer tells whether an
    // EncryptedKey decrypted.
    let transports = candidates.into_iter().map(|key| key_transport(*key)).collect::<Result<Vec<_>, _>>()?;
    let cipher_value = cipher_value(data)?;
    let content_key = transports
        .iter()
        .flat_map(|transport| sp_keys.iter().map(move |sp_key| (transport, sp_key)))
        .find_map(|(transport, sp_key)| transport.unwrap(sp_key).ok().filter(|key| key.len() == cipher.key_len()))
        .ok_or(FAILED)?;
    let plaintext = match cipher {
        ContentCipher::Aes128Cbc => cbc_decrypt::<aes::Aes128>(&content_key, &cipher_value)?,
        ContentCipher::Aes256Cbc => cbc_decrypt::<aes::Aes256>(&content_key, &cipher_value)?,
        ContentCipher::Aes128Gcm => gcm_decrypt::<aes_gcm::Aes128Gcm>(&content_key, &cipher_value)?,
        ContentCipher::Aes256Gcm => gcm_decrypt::<aes_gcm::Aes256Gcm>(&content_key, &cipher_value)?,
    };
    String::from_utf8(plaintext).map_err(|_| FAILED)
}

fn cipher_value(node: Node<'_, '_>) -> Result<Vec<u8>, SamlError> {
    let data = required_child(node, NS_XMLENC, "CipherData", "CipherData missing")?;
    let value = required_child(data, NS_XMLENC, "CipherValue", "only CipherValue is accepted in CipherData")?;
    decode_base64(&text_content(value))
}

/// One `EncryptedKey`: RSA-OAEP with its digest and mask generation function, and the
/// wrapped content key.
struct KeyTransport {
    digest: DigestAlgorithm,
    mgf: DigestAlgorithm,
    wrapped: Vec<u8>,
}

impl KeyTransport {
    fn unwrap(&self, sp_key: &DecryptionKey) -> Result<Vec<u8>, SamlError> {
        sp_key.oaep_decrypt(self.digest, self.mgf, &self.wrapped)
    }
}

fn key_transport(encrypted_key: Node<'_, '_>) -> Result<KeyTransport, SamlError> {
    let method = required_child(encrypted_key, NS_XMLENC, "EncryptionMethod", "EncryptedKey without EncryptionMethod")?;
    let mut digest = DigestAlgorithm::Sha1;
    let mut mgf_sha256 = false;
    let oaep11 = match method.attribute("Algorithm") {
        Some("http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p") => false,
        Some("http://www.w3.org/2009/xmlenc11#rsa-oaep") => true,
        _ => return Err(SamlError::Decryption("the key transport algorithm is not accepted (RSA-OAEP only)")),
    };
    for parameter in element_children(method) {
        if is(parameter, NS_DSIG, "DigestMethod") {
            digest = parameter
                .attribute("Algorithm")
                .and_then(DigestAlgorithm::from_uri)
                .ok_or(SamlError::Decryption("the OAEP digest is not accepted"))?;
        } else if oaep11 && is(parameter, NS_XMLENC11, "MGF") {
            mgf_sha256 = match parameter.attribute("Algorithm") {
                Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => false,
                Some("http://www.w3.org/2009/xmlenc11#mgf1sha256") => true,
                _ => return Err(SamlError::Decryption("the OAEP mask generation function is not accepted")),
            };
        } else {
            return Err(SamlError::Decryption("key transport parameters other than the digest and MGF are not accepted"));
        }
    }
    let mgf = if mgf_sha256 { DigestAlgorithm::Sha256 } else { DigestAlgorithm::Sha1 };
    Ok(KeyTransport { digest, mgf, wrapped: cipher_value(encrypted_key)? })
}

/// CBC with the IV in front; XML Encryption's padding is "last byte = pad length" with arbitrary
/// filler, so it is stripped by hand rather than as PKCS#7.
fn cbc_decrypt<C>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, SamlError>
where
    C: aes::cipher::BlockCipher + aes::cipher::BlockDecrypt + aes::cipher::KeyInit,
    cbc::Decryptor<C>: aes::cipher::KeyIvInit,
{
    const BLOCK: usize = 16;
    if data.len() < 2 * BLOCK || !data.len().is_multiple_of(BLOCK) {
        return Err(FAILED);
    }
    let (iv, ciphertext) = data.split_at(BLOCK);
    let mut buffer = ciphertext.to_vec();
    let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| FAILED)?;
    let plain = decryptor.decrypt_padded_mut::<NoPadding>(&mut buffer).map_err(|_| FAILED)?;
    let pad = usize::from(*plain.last().ok_or(FAILED)?);
    if pad == 0 || pad > BLOCK || pad > plain.len() {
        return Err(FAILED);
    }
    let end = plain.len() - pad;
    Ok(plain.get(..end).ok_or(FAILED)?.to_vec())
}

/// GCM with a 96-bit IV in front and the 128-bit tag at the end, as XML Encryption 1.1 lays it out.
fn gcm_decrypt<C>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, SamlError>
where
    C: aes_gcm::aead::KeyInit + aes_gcm::aead::Aead,
    C: aes_gcm::aead::AeadCore<NonceSize = aes_gcm::aead::consts::U12>,
{
    if data.len() < 12 + 16 {
        return Err(FAILED);
    }
    let (iv, ciphertext) = data.split_at(12);
    let iv: [u8; 12] = iv.try_into().map_err(|_| FAILED)?;
    let cipher = C::new_from_slice(key).map_err(|_| FAILED)?;
    cipher.decrypt(&iv.into(), ciphertext).map_err(|_| FAILED)
}
