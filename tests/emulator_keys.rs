//! Keys and certificates of the local Key Vault through the official
//! `azure_security_keyvault_keys` and `_certificates` crates: a restored key is the same key (its
//! signatures verify under the public key read before the backup, checked here with the `rsa`
//! and `p256` crates, not with the emulator's own code), and a certificate's backup brings back
//! the certificate, its managed key and its managed secret with their version ids.

// The SDK's models are `#[non_exhaustive]`: they cannot be built with struct literals outside
// their crate, so fields are set after `Default::default()`.
#![allow(clippy::field_reassign_with_default)]

use azure_core::error::ErrorKind;
use azure_core::http::poller::PollerOptions;
use azure_security_keyvault_certificates::ResourceExt as _;
use azure_security_keyvault_certificates::models::{
    CertificateClientCreateCertificateOptions, CertificatePolicy, CreateCertificateParameters,
    IssuerParameters, KeyProperties, RestoreCertificateParameters, SecretProperties,
    X509CertificateProperties,
};
use azure_security_keyvault_keys::ResourceExt as _;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, KeyClientGetKeyOptions, KeyClientSignOptions, KeyType,
    RestoreKeyParameters, SignParameters, SignatureAlgorithm,
};
use azure_security_keyvault_secrets::ResourceExt as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::support::TestEmulator;

fn http_error(err: &azure_core::Error) -> (u16, String) {
    match err.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (u16::from(*status), error_code.clone().unwrap_or_default()),
        other => panic!("expected an HTTP error, got {other:?}: {err}"),
    }
}

async fn sign(
    client: &azure_security_keyvault_keys::KeyClient,
    name: &str,
    version: &str,
    algorithm: SignatureAlgorithm,
    digest: &[u8],
) -> Vec<u8> {
    let mut params = SignParameters::default();
    params.algorithm = Some(algorithm);
    params.value = Some(digest.to_vec());
    client
        .sign(
            name,
            params.try_into().unwrap(),
            Some(KeyClientSignOptions {
                key_version: Some(version.to_string()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .result
        .unwrap()
}

#[tokio::test]
async fn restored_key_signs_as_the_original_public_key_expects() {
    let emu = TestEmulator::start().await;
    let client = emu.key_client("alpha");

    let mut params = CreateKeyParameters::default();
    params.kty = Some(KeyType::Rsa);
    params.key_size = Some(2048);
    client
        .create_key("rust-rsa", params.clone().try_into().unwrap(), None)
        .await
        .unwrap();
    let original = client
        .create_key("rust-rsa", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let version = original.resource_id().unwrap().version.unwrap();
    let jwk = original.key.clone().unwrap();
    let public = RsaPublicKey::new(
        BigUint::from_bytes_be(&jwk.n.unwrap()),
        BigUint::from_bytes_be(&jwk.e.unwrap()),
    )
    .unwrap();

    let blob = client
        .backup_key("rust-rsa", None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap();
    client.delete_key("rust-rsa", None).await.unwrap();
    client.purge_deleted_key("rust-rsa", None).await.unwrap();
    let err = client.get_key("rust-rsa", None).await.unwrap_err();
    assert_eq!(http_error(&err), (404, "KeyNotFound".to_string()));

    let mut restore = RestoreKeyParameters::default();
    restore.key_backup = Some(blob);
    let restored = client
        .restore_key(restore.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(restored.resource_id().unwrap().version.unwrap(), version);
    let versions: Vec<_> = {
        use futures::TryStreamExt;
        client
            .list_key_properties_versions("rust-rsa", None)
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(versions.len(), 2, "every version comes back");

    let digest = Sha256::digest(b"signed after the restore");
    let signature = sign(
        &client,
        "rust-rsa",
        &version,
        SignatureAlgorithm::Rs256,
        &digest,
    )
    .await;
    public
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
        .expect("the restored key is the original key");
}

#[tokio::test]
async fn restored_ec_key_keeps_its_curve_point() {
    let emu = TestEmulator::start().await;
    let client = emu.key_client("alpha");
    let mut params = CreateKeyParameters::default();
    params.kty = Some(KeyType::Ec);
    params.curve = Some(CurveName::P256);
    let original = client
        .create_key("rust-ec", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let version = original.resource_id().unwrap().version.unwrap();
    let jwk = original.key.unwrap();
    let mut point = vec![4u8];
    point.extend(jwk.x.unwrap());
    point.extend(jwk.y.unwrap());
    let verifier = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();

    let blob = client
        .backup_key("rust-ec", None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap();
    client.delete_key("rust-ec", None).await.unwrap();
    client.purge_deleted_key("rust-ec", None).await.unwrap();
    // Restore into another vault of the same subscription.
    let beta = emu.key_client("beta");
    let mut restore = RestoreKeyParameters::default();
    restore.key_backup = Some(blob);
    beta.restore_key(restore.try_into().unwrap(), None)
        .await
        .unwrap();

    let digest = Sha256::digest(b"ec");
    let signature = sign(
        &beta,
        "rust-ec",
        &version,
        SignatureAlgorithm::Es256,
        &digest,
    )
    .await;
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    verifier
        .verify_prehash(&digest, &signature)
        .expect("the restored EC key is the original key");
}

#[tokio::test]
async fn certificate_backup_purge_restore_brings_all_three_back() {
    let emu = TestEmulator::start().await;
    let certificates = emu.certificate_client("alpha");
    let keys = emu.key_client("alpha");
    let secrets = emu.secret_client("alpha");

    let mut x509 = X509CertificateProperties::default();
    x509.subject = Some("CN=rust.example.test".into());
    x509.validity_in_months = Some(12);
    let mut issuer = IssuerParameters::default();
    issuer.name = Some("Self".into());
    let mut key_props = KeyProperties::default();
    key_props.key_type = Some(azure_security_keyvault_certificates::models::KeyType::Rsa);
    key_props.key_size = Some(2048);
    key_props.exportable = Some(true);
    let mut secret_props = SecretProperties::default();
    secret_props.content_type = Some("application/x-pkcs12".into());
    let mut policy = CertificatePolicy::default();
    policy.x509_certificate_properties = Some(x509);
    policy.issuer_parameters = Some(issuer);
    policy.key_properties = Some(key_props);
    policy.secret_properties = Some(secret_props);
    let mut params = CreateCertificateParameters::default();
    params.certificate_policy = Some(policy);
    let created = certificates
        .begin_create_certificate(
            "rust-cert",
            params.try_into().unwrap(),
            Some(CertificateClientCreateCertificateOptions {
                method_options: PollerOptions {
                    frequency: azure_core::time::Duration::seconds(1),
                    ..Default::default()
                },
            }),
        )
        .unwrap()
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let version = created.resource_id().unwrap().version.unwrap();
    let cer = created.cer.clone().unwrap();

    // The managed key and secret share the name and version and refuse direct backup.
    let key = keys
        .get_key("rust-cert", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(key.managed, Some(true));
    assert_eq!(key.resource_id().unwrap().version.unwrap(), version);
    let err = keys.backup_key("rust-cert", None).await.unwrap_err();
    assert_eq!(http_error(&err), (403, "Forbidden".to_string()));
    let secret = secrets
        .get_secret("rust-cert", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.managed, Some(true));
    assert_eq!(secret.content_type.as_deref(), Some("application/x-pkcs12"));
    let err = secrets.backup_secret("rust-cert", None).await.unwrap_err();
    assert_eq!(http_error(&err), (403, "Forbidden".to_string()));

    let blob = certificates
        .backup_certificate("rust-cert", None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap();
    certificates
        .delete_certificate("rust-cert", None)
        .await
        .unwrap();
    certificates
        .purge_deleted_certificate("rust-cert", None)
        .await
        .unwrap();
    let err = keys.get_key("rust-cert", None).await.unwrap_err();
    assert_eq!(http_error(&err), (404, "KeyNotFound".to_string()));
    let err = secrets.get_secret("rust-cert", None).await.unwrap_err();
    assert_eq!(http_error(&err), (404, "SecretNotFound".to_string()));

    let mut restore = RestoreCertificateParameters::default();
    restore.certificate_backup = Some(blob);
    let restored = certificates
        .restore_certificate(restore.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(restored.resource_id().unwrap().version.unwrap(), version);
    assert_eq!(restored.cer.unwrap(), cer);

    let key_back = keys
        .get_key(
            "rust-cert",
            Some(KeyClientGetKeyOptions {
                key_version: Some(version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(key_back.managed, Some(true));
    assert_eq!(key_back.key.unwrap().n, key.key.unwrap().n);
    let secret_back = secrets
        .get_secret("rust-cert", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret_back.managed, Some(true));
    assert_eq!(secret_back.resource_id().unwrap().version.unwrap(), version);
    assert_eq!(secret_back.value, secret.value);
}
