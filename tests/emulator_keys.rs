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
    AdministratorContact, CertificateClientCreateCertificateOptions, CertificatePolicy, Contact,
    Contacts, CreateCertificateParameters, IssuerCredentials, IssuerParameters, KeyProperties,
    OrganizationDetails, RestoreCertificateParameters, SecretProperties, SetIssuerParameters,
    UpdateCertificateOperationParameter, UpdateIssuerParameters, X509CertificateProperties,
};
use azure_security_keyvault_keys::ResourceExt as _;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, EncryptionAlgorithm, GetRandomBytesParameters,
    KeyClientEncryptOptions, KeyClientGetKeyOptions, KeyClientSignOptions,
    KeyClientUpdateKeyPropertiesOptions, KeyClientWrapKeyOptions, KeyOperation,
    KeyOperationParameters, KeyType, RestoreKeyParameters, SignParameters, SignatureAlgorithm,
    UpdateKeyPropertiesParameters, VerifyParameters,
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

/// Runs one cipher operation through the official crate: `op` is `encrypt`, `decrypt`,
/// `wrap` or `unwrap`; answers the result bytes or the HTTP status and error code.
async fn cipher(
    client: &azure_security_keyvault_keys::KeyClient,
    op: &str,
    name: &str,
    version: &str,
    algorithm: EncryptionAlgorithm,
    value: &[u8],
) -> Result<Vec<u8>, (u16, String)> {
    let mut params = KeyOperationParameters::default();
    params.algorithm = Some(algorithm);
    params.value = Some(value.to_vec());
    let params = params.try_into().unwrap();
    let version = Some(version.to_string());
    let answer = match op {
        "encrypt" => {
            client
                .encrypt(
                    name,
                    params,
                    Some(KeyClientEncryptOptions {
                        key_version: version,
                        ..Default::default()
                    }),
                )
                .await
        }
        "decrypt" => {
            client
                .decrypt(name, version.as_deref().unwrap_or_default(), params, None)
                .await
        }
        "wrap" => {
            client
                .wrap_key(
                    name,
                    params,
                    Some(KeyClientWrapKeyOptions {
                        key_version: version,
                        ..Default::default()
                    }),
                )
                .await
        }
        "unwrap" => {
            client
                .unwrap_key(name, version.as_deref().unwrap_or_default(), params, None)
                .await
        }
        other => panic!("no cipher operation {other}"),
    };
    match answer {
        Ok(response) => Ok(response.into_model().unwrap().result.unwrap()),
        Err(err) => Err(http_error_inner(&err)),
    }
}

/// The status and `innererror.code` (else `error.code`) of an HTTP error.
fn http_error_inner(err: &azure_core::Error) -> (u16, String) {
    match err.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let inner = raw_response
                .as_ref()
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(r.body()).ok())
                .and_then(|b| b["error"]["innererror"]["code"].as_str().map(String::from));
            (
                u16::from(*status),
                inner.unwrap_or_else(|| error_code.clone().unwrap_or_default()),
            )
        }
        other => panic!("expected an HTTP error, got {other:?}: {err}"),
    }
}

async fn create_rsa(
    client: &azure_security_keyvault_keys::KeyClient,
    name: &str,
    key_ops: Option<Vec<KeyOperation>>,
) -> (String, RsaPublicKey) {
    let mut params = CreateKeyParameters::default();
    params.kty = Some(KeyType::Rsa);
    params.key_size = Some(2048);
    params.key_ops = key_ops;
    let key = client
        .create_key(name, params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let version = key.resource_id().unwrap().version.unwrap();
    let jwk = key.key.unwrap();
    let public = RsaPublicKey::new(
        BigUint::from_bytes_be(&jwk.n.unwrap()),
        BigUint::from_bytes_be(&jwk.e.unwrap()),
    )
    .unwrap();
    (version, public)
}

#[tokio::test]
async fn rsa_key_encrypts_decrypts_wraps_and_unwraps_with_every_algorithm() {
    let emu = TestEmulator::start().await;
    let client = emu.key_client("alpha");
    let (version, public) = create_rsa(&client, "rust-cipher", None).await;
    let content_key = [7u8; 32];
    for algorithm in [
        EncryptionAlgorithm::Rsa1_5,
        EncryptionAlgorithm::RsaOaep,
        EncryptionAlgorithm::RsaOaep256,
    ] {
        let sealed = cipher(
            &client,
            "encrypt",
            "rust-cipher",
            &version,
            algorithm.clone(),
            &content_key,
        )
        .await
        .unwrap();
        assert_eq!(sealed.len(), 256, "{algorithm:?}: one RSA-2048 block");
        let opened = cipher(
            &client,
            "decrypt",
            "rust-cipher",
            &version,
            algorithm.clone(),
            &sealed,
        )
        .await
        .unwrap();
        assert_eq!(opened, content_key, "{algorithm:?}");
        let wrapped = cipher(
            &client,
            "wrap",
            "rust-cipher",
            &version,
            algorithm.clone(),
            &content_key,
        )
        .await
        .unwrap();
        let unwrapped = cipher(
            &client,
            "unwrap",
            "rust-cipher",
            &version,
            algorithm.clone(),
            &wrapped,
        )
        .await
        .unwrap();
        assert_eq!(unwrapped, content_key, "{algorithm:?}");
    }

    // Sealed here with the `rsa` crate under the public JWK: the vault opens it, so its
    // RSA-OAEP-256 is the standard one and the JWK is the key's real public half.
    let mut rng = rand::rngs::OsRng;
    let local = public
        .encrypt(&mut rng, rsa::Oaep::new::<Sha256>(), b"sealed outside")
        .unwrap();
    let opened = cipher(
        &client,
        "unwrap",
        "rust-cipher",
        &version,
        EncryptionAlgorithm::RsaOaep256,
        &local,
    )
    .await
    .unwrap();
    assert_eq!(opened, b"sealed outside");
    let local = public
        .encrypt(&mut rng, rsa::Pkcs1v15Encrypt, b"pkcs1")
        .unwrap();
    let opened = cipher(
        &client,
        "decrypt",
        "rust-cipher",
        &version,
        EncryptionAlgorithm::Rsa1_5,
        &local,
    )
    .await
    .unwrap();
    assert_eq!(opened, b"pkcs1");

    // A ciphertext that does not open is the caller's mistake: 400, not 500.
    let mut broken = local.clone();
    broken[5] ^= 0xff;
    let err = cipher(
        &client,
        "decrypt",
        "rust-cipher",
        &version,
        EncryptionAlgorithm::RsaOaep,
        &broken,
    )
    .await
    .unwrap_err();
    assert_eq!(err, (400, "BadParameter".to_string()));
}

#[tokio::test]
async fn key_ops_refusal_is_403_key_operation_forbidden() {
    let emu = TestEmulator::start().await;
    let client = emu.key_client("alpha");
    let (version, _) = create_rsa(
        &client,
        "rust-signer",
        Some(vec![KeyOperation::Sign, KeyOperation::Verify]),
    )
    .await;
    for op in ["encrypt", "wrap"] {
        let err = cipher(
            &client,
            op,
            "rust-signer",
            &version,
            EncryptionAlgorithm::RsaOaep256,
            b"k",
        )
        .await
        .unwrap_err();
        assert_eq!(err, (403, "KeyOperationForbidden".to_string()), "{op}");
    }

    // An EC key gets sign and verify only: encrypt is refused by its key_ops, as Azure does.
    let mut params = CreateKeyParameters::default();
    params.kty = Some(KeyType::Ec);
    params.curve = Some(CurveName::P256);
    let ec = client
        .create_key("rust-ec-cipher", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let ec_version = ec.resource_id().unwrap().version.unwrap();
    let err = cipher(
        &client,
        "encrypt",
        "rust-ec-cipher",
        &ec_version,
        EncryptionAlgorithm::RsaOaep256,
        b"k",
    )
    .await
    .unwrap_err();
    assert_eq!(err, (403, "KeyOperationForbidden".to_string()));
}

#[tokio::test]
async fn key_outside_its_window_refuses_sign_encrypt_wrap_but_verifies_decrypts_unwraps() {
    let emu = TestEmulator::start().await;
    let client = emu.key_client("alpha");
    let (version, _) = create_rsa(&client, "rust-window", None).await;
    let digest = Sha256::digest(b"signed in the window");
    let signature = sign(
        &client,
        "rust-window",
        &version,
        SignatureAlgorithm::Rs256,
        &digest,
    )
    .await;
    let sealed = cipher(
        &client,
        "encrypt",
        "rust-window",
        &version,
        EncryptionAlgorithm::RsaOaep256,
        b"data key",
    )
    .await
    .unwrap();
    let wrapped = cipher(
        &client,
        "wrap",
        "rust-window",
        &version,
        EncryptionAlgorithm::RsaOaep256,
        b"content key",
    )
    .await
    .unwrap();

    let (_, clock) = emu.admin(reqwest::Method::GET, "/clock", None).await;
    let now = clock["now"].as_i64().unwrap();
    for (field, at, inner) in [
        ("exp", now - 60, "KeyExpired"),
        ("nbf", now + 3600, "KeyNotYetValid"),
    ] {
        let mut attributes = azure_security_keyvault_keys::models::KeyAttributes::default();
        let at = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
        // Each case sets one bound and clears the other.
        if field == "exp" {
            attributes.expires = Some(at);
        } else {
            attributes.not_before = Some(at);
            attributes.expires =
                Some(time::OffsetDateTime::from_unix_timestamp(now + 7200).unwrap());
        }
        let mut update = UpdateKeyPropertiesParameters::default();
        update.key_attributes = Some(attributes);
        client
            .update_key_properties(
                "rust-window",
                update.try_into().unwrap(),
                Some(KeyClientUpdateKeyPropertiesOptions {
                    key_version: Some(version.clone()),
                    ..Default::default()
                }),
            )
            .await
            .unwrap();

        let mut params = SignParameters::default();
        params.algorithm = Some(SignatureAlgorithm::Rs256);
        params.value = Some(digest.to_vec());
        let err = client
            .sign(
                "rust-window",
                params.try_into().unwrap(),
                Some(KeyClientSignOptions {
                    key_version: Some(version.clone()),
                    ..Default::default()
                }),
            )
            .await
            .unwrap_err();
        assert_eq!(
            http_error_inner(&err),
            (403, inner.to_string()),
            "sign, {field}"
        );
        for op in ["encrypt", "wrap"] {
            let err = cipher(
                &client,
                op,
                "rust-window",
                &version,
                EncryptionAlgorithm::RsaOaep256,
                b"new data",
            )
            .await
            .unwrap_err();
            assert_eq!(err, (403, inner.to_string()), "{op}, {field}");
        }

        // What was protected in the window stays readable and checkable.
        let mut verify = VerifyParameters::default();
        verify.algorithm = Some(SignatureAlgorithm::Rs256);
        verify.digest = Some(digest.to_vec());
        verify.signature = Some(signature.clone());
        let verified = client
            .verify("rust-window", &version, verify.try_into().unwrap(), None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(verified.value, Some(true), "verify, {field}");
        let opened = cipher(
            &client,
            "decrypt",
            "rust-window",
            &version,
            EncryptionAlgorithm::RsaOaep256,
            &sealed,
        )
        .await
        .unwrap();
        assert_eq!(opened, b"data key", "decrypt, {field}");
        let unwrapped = cipher(
            &client,
            "unwrap",
            "rust-window",
            &version,
            EncryptionAlgorithm::RsaOaep256,
            &wrapped,
        )
        .await
        .unwrap();
        assert_eq!(unwrapped, b"content key", "unwrap, {field}");
    }
}

#[tokio::test]
async fn rng_answers_the_requested_number_of_random_bytes() {
    let emu = TestEmulator::start().await;
    let client = emu.key_client("alpha");
    let mut seen = Vec::new();
    for count in [1, 32, 128] {
        let mut params = GetRandomBytesParameters::default();
        params.count = Some(count);
        let bytes = client
            .get_random_bytes(params.try_into().unwrap(), None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .value
            .unwrap();
        assert_eq!(bytes.len(), usize::try_from(count).unwrap());
        seen.push(bytes);
    }
    let mut again = GetRandomBytesParameters::default();
    again.count = Some(32);
    let other = client
        .get_random_bytes(again.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap();
    assert_ne!(other, seen[1], "two draws of 32 bytes differ");
    for count in [0, 129] {
        let mut params = GetRandomBytesParameters::default();
        params.count = Some(count);
        let err = client
            .get_random_bytes(params.try_into().unwrap(), None)
            .await
            .unwrap_err();
        assert_eq!(
            http_error(&err),
            (400, "BadParameter".to_string()),
            "{count}"
        );
    }
}

#[tokio::test]
async fn certificate_issuers_and_contacts_are_served() {
    let emu = TestEmulator::start().await;
    let client = emu.certificate_client("alpha");

    let mut credentials = IssuerCredentials::default();
    credentials.account_id = Some("account-1".into());
    credentials.password = Some("issuer-password-canary".into());
    let mut admin = AdministratorContact::default();
    admin.first_name = Some("Ada".into());
    admin.email = Some("ada@example.test".into());
    let mut org = OrganizationDetails::default();
    org.id = Some("org-1".into());
    org.admin_contacts = Some(vec![admin]);
    let mut set = SetIssuerParameters::default();
    set.provider = Some("Test".into());
    set.credentials = Some(credentials);
    set.organization_details = Some(org);
    let issuer = client
        .set_issuer("rust-issuer", set.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(issuer.provider.as_deref(), Some("Test"));
    assert_eq!(
        issuer.id.as_deref(),
        Some(format!("{}certificates/issuers/rust-issuer", emu.vault_url("alpha")).as_str())
    );
    let kept = issuer.credentials.unwrap();
    assert_eq!(kept.account_id.as_deref(), Some("account-1"));
    assert_eq!(kept.password, None, "the issuer password is never answered");

    let mut update = UpdateIssuerParameters::default();
    update.provider = Some("OneCertV2-PrivateCA".into());
    let updated = client
        .update_issuer("rust-issuer", update.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.provider.as_deref(), Some("OneCertV2-PrivateCA"));
    assert_eq!(
        updated.organization_details.unwrap().id.as_deref(),
        Some("org-1"),
        "an update keeps what it does not name"
    );
    let listed: Vec<_> = {
        use futures::TryStreamExt;
        client
            .list_issuer_properties(None)
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].provider.as_deref(), Some("OneCertV2-PrivateCA"));
    client.delete_issuer("rust-issuer", None).await.unwrap();
    let err = client.get_issuer("rust-issuer", None).await.unwrap_err();
    assert_eq!(http_error(&err).0, 404);

    let err = client.get_contacts(None).await.unwrap_err();
    assert_eq!(http_error(&err).0, 404, "no contacts yet");
    let mut contact = Contact::default();
    contact.email = Some("ops@example.test".into());
    contact.name = Some("Ops".into());
    let mut contacts = Contacts::default();
    contacts.contact_list = Some(vec![contact]);
    let set = client
        .set_contacts(contacts.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(set.contact_list.as_ref().unwrap().len(), 1);
    let got = client
        .get_contacts(None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        got.contact_list.unwrap()[0].email.as_deref(),
        Some("ops@example.test")
    );
    client.delete_contacts(None).await.unwrap();
    let err = client.get_contacts(None).await.unwrap_err();
    assert_eq!(http_error(&err).0, 404);

    let journal = format!("{:?}", emu.journal().await);
    assert!(!journal.contains("issuer-password-canary"));
    assert!(!format!("{:?}", emu.running.state()).contains("issuer-password-canary"));
}

#[tokio::test]
async fn pending_certificate_operation_cancel_and_delete_are_served() {
    let emu = TestEmulator::start().await;
    let client = emu.certificate_client("alpha");
    let token = emu.token().await;
    // Created raw, so nothing polls the operation before the cancellation arrives.
    let created = emu
        .http
        .post(emu.url("alpha", "/certificates/rust-pending/create?api-version=7.6"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "policy": {"x509_props": {"subject": "CN=pending"}, "issuer": {"name": "Self"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 202);

    let mut cancel = UpdateCertificateOperationParameter::default();
    cancel.cancellation_requested = Some(true);
    let cancelled = client
        .update_certificate_operation("rust-pending", cancel.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(cancelled.cancellation_requested, Some(true));
    assert_eq!(cancelled.status.as_deref(), Some("cancelled"));
    let polled = client
        .get_certificate_operation("rust-pending", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        polled.status.as_deref(),
        Some("cancelled"),
        "a poll keeps it"
    );

    let deleted = client
        .delete_certificate_operation("rust-pending", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(deleted.cancellation_requested, Some(true));
    let err = client
        .get_certificate_operation("rust-pending", None)
        .await
        .unwrap_err();
    assert_eq!(http_error(&err), (404, "CertificateNotFound".to_string()));
}

#[tokio::test]
async fn key_operations_without_a_version_use_the_current_version() {
    // The crates send `/keys/{name}//sign` when no version is named; that was a 404.
    let emu = TestEmulator::start().await;
    let client = emu.key_client("alpha");
    create_rsa(&client, "rust-current", None).await;
    let (current, public) = create_rsa(&client, "rust-current", None).await;
    let digest = Sha256::digest(b"no version named");
    let mut params = SignParameters::default();
    params.algorithm = Some(SignatureAlgorithm::Rs256);
    params.value = Some(digest.to_vec());
    let signed = client
        .sign("rust-current", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(signed.resource_id().unwrap().version.unwrap(), current);
    public
        .verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &digest,
            &signed.result.clone().unwrap(),
        )
        .expect("signed by the current version");
    let mut verify = VerifyParameters::default();
    verify.algorithm = Some(SignatureAlgorithm::Rs256);
    verify.digest = Some(digest.to_vec());
    verify.signature = signed.result;
    let verified = client
        .verify("rust-current", "", verify.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(verified.value, Some(true));

    let mut params = KeyOperationParameters::default();
    params.algorithm = Some(EncryptionAlgorithm::RsaOaep256);
    params.value = Some(b"current".to_vec());
    let sealed = client
        .encrypt("rust-current", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .result
        .unwrap();
    let mut params = KeyOperationParameters::default();
    params.algorithm = Some(EncryptionAlgorithm::RsaOaep256);
    params.value = Some(sealed);
    let opened = client
        .decrypt("rust-current", "", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .result
        .unwrap();
    assert_eq!(opened, b"current");
    let journal = emu.journal().await;
    for op in ["sign", "verify", "encrypt", "decrypt"] {
        let path = format!("/keys/rust-current//{op}");
        assert!(
            journal
                .iter()
                .any(|e| e["path"] == path.as_str() && e["status"] == 200),
            "{path} answered 200"
        );
    }
}
