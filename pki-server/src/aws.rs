//! AWS SDK configuration shared by the S3 storage and the KMS seal.
//!
//! The SDK's own HTTPS client would bring aws-lc; we hand it a rustls-on-ring
//! client. Everything else (region, credentials, AWS_ENDPOINT_URL) comes from the
//! SDK's standard settings.

use aws_smithy_http_client::{Builder, tls};

/// Load the SDK configuration from the environment with a ring-based HTTPS client.
pub async fn sdk_config() -> aws_config::SdkConfig {
    loader().load().await
}

/// The config loader with our HTTP client and checksum settings, for callers
/// (tests) that set endpoint, region or credentials in code.
pub fn loader() -> aws_config::ConfigLoader {
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
}
