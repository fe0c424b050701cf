//! AWS clients: one SDK config (ring-based HTTPS client, standard settings:
//! AWS_ENDPOINT_URL, profiles, region), and a [`Recorder`] interceptor on every
//! client that counts mutating calls and can inject a failure after N of them.

use aws_smithy_http_client::{Builder, tls};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The SDK config loader with a rustls-on-ring HTTPS client (no aws-lc), as
/// pki-server's `aws.rs` builds it. Region, credentials and endpoint come from
/// the SDK's standard settings unless the caller sets them.
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

/// Counts the calls that can change AWS (everything but Describe/List/Get/Head)
/// and, for tests, fails the call after a budget of them.
#[derive(Debug, Default)]
pub struct Recorder {
    mutations: AtomicUsize,
    fail_after: Mutex<Option<usize>>,
    log: Mutex<Vec<String>>,
}

/// Operations that only read.
pub fn is_read_only(operation: &str) -> bool {
    ["Describe", "List", "Get", "Head"]
        .iter()
        .any(|p| operation.starts_with(p))
}

impl Recorder {
    /// A recorder with no failure injected.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// Mutating calls sent so far.
    pub fn mutations(&self) -> usize {
        self.mutations.load(Ordering::SeqCst)
    }

    /// The mutating calls sent so far, as `Service.Operation`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Forget the count and the log.
    pub fn reset(&self) {
        self.mutations.store(0, Ordering::SeqCst);
        if let Ok(mut l) = self.log.lock() {
            l.clear();
        }
    }

    /// Let `n` more mutating calls through, then fail every one (None: never).
    pub fn fail_after(&self, n: Option<usize>) {
        if let Ok(mut f) = self.fail_after.lock() {
            *f = n.map(|n| n + self.mutations());
        }
    }
}

#[derive(Debug, Clone)]
struct Counting(Arc<Recorder>);

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "provisioner::Recorder"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(md) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        if is_read_only(md.name()) {
            return Ok(());
        }
        let r = &self.0;
        if let Ok(f) = r.fail_after.lock()
            && let Some(limit) = *f
            && r.mutations() >= limit
        {
            return Err(format!("injected failure before {}.{}", md.service(), md.name()).into());
        }
        r.mutations.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut l) = r.log.lock() {
            l.push(format!("{}.{}", md.service(), md.name()));
        }
        Ok(())
    }
}

/// Every client the provisioner uses, sharing one recorder.
#[derive(Debug, Clone)]
pub struct Clients {
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// Auto Scaling.
    pub asg: aws_sdk_autoscaling::Client,
    /// ELBv2.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// Route53.
    pub r53: aws_sdk_route53::Client,
    /// S3 (path-style whenever an endpoint is configured).
    pub s3: aws_sdk_s3::Client,
    /// KMS.
    pub kms: aws_sdk_kms::Client,
    /// CloudTrail.
    pub cloudtrail: aws_sdk_cloudtrail::Client,
    /// The mutating-call recorder.
    pub recorder: Arc<Recorder>,
    /// The region in use.
    pub region: String,
}

impl Clients {
    /// Build every client from one SDK config.
    pub fn new(sdk: &aws_config::SdkConfig, recorder: Arc<Recorder>) -> Clients {
        let i = Counting(recorder.clone());
        let path_style = sdk.endpoint_url().is_some();
        Clients {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(sdk)
                    .interceptor(i.clone())
                    .build(),
            ),
            asg: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(sdk)
                    .interceptor(i.clone())
                    .build(),
            ),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(sdk)
                    .interceptor(i.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(sdk)
                    .interceptor(i.clone())
                    .build(),
            ),
            r53: aws_sdk_route53::Client::from_conf(
                aws_sdk_route53::config::Builder::from(sdk)
                    .interceptor(i.clone())
                    .build(),
            ),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(path_style)
                    .interceptor(i.clone())
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(sdk)
                    .interceptor(i.clone())
                    .build(),
            ),
            cloudtrail: aws_sdk_cloudtrail::Client::from_conf(
                aws_sdk_cloudtrail::config::Builder::from(sdk)
                    .interceptor(i)
                    .build(),
            ),
            recorder,
            region: sdk
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".into()),
        }
    }
}

/// An SDK error with its whole source chain, for messages.
pub fn err<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(&e)
    )
}

/// The error code of a service error, if any.
pub fn code<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Option<String>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    match e {
        aws_smithy_runtime_api::client::result::SdkError::ServiceError(s) => {
            s.err().code().map(str::to_string)
        }
        _ => None,
    }
}

/// Error codes that say the resource a call names does not exist (any
/// more). A delete that gets one is done: the resource is gone, whether an
/// earlier attempt (the SDK's own retry, a retry loop, another destroy) or
/// anyone else removed it.
const NOT_FOUND: &[&str] = &[
    // EC2
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidPermission.NotFound",
    "InvalidInternetGatewayID.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidAssociationID.NotFound",
    "InvalidRoute.NotFound",
    "InvalidAllocationID.NotFound",
    "NatGatewayNotFound",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateName.NotFoundException",
    // Elastic Load Balancing v2
    "LoadBalancerNotFound",
    "TargetGroupNotFound",
    "ListenerNotFound",
    // IAM
    "NoSuchEntity",
    // Route 53
    "NoSuchHostedZone",
    // S3
    "NoSuchBucket",
    "NoSuchKey",
    // KMS (a key pending deletion answers KMSInvalidStateException: the
    // KMS delete checks the key's state itself)
    "NotFoundException",
    // CloudTrail
    "TrailNotFoundException",
];

/// Error codes that say "not found" only with a message that does: Auto
/// Scaling's `AutoScalingGroup name not found - ...`, Route 53's
/// `Tried to delete resource record set [...] but it was not found`.
const NOT_FOUND_IF_SAID: &[(&str, &str)] = &[
    ("ValidationError", "not found"),
    ("InvalidChangeBatch", "but it was not found"),
];

/// Whether a service's answer (`code`, `message`) says that what the call
/// names does not exist.
pub fn is_not_found(code: Option<&str>, message: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    NOT_FOUND.contains(&code)
        || NOT_FOUND_IF_SAID
            .iter()
            .any(|(c, said)| *c == code && message.is_some_and(|m| m.contains(said)))
}

/// The output of a call, or None when the service answered that what the
/// call names does not exist ([`is_not_found`]); any other failure as an
/// error with its whole source chain.
pub fn unless_gone<T, E, R>(
    result: Result<T, aws_smithy_runtime_api::client::result::SdkError<E, R>>,
) -> anyhow::Result<Option<T>>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(aws_smithy_runtime_api::client::result::SdkError::ServiceError(s))
            if is_not_found(s.err().code(), s.err().message()) =>
        {
            Ok(None)
        }
        Err(e) => Err(err(e)),
    }
}

/// Percent-decode (IAM returns policy documents URL-encoded).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a policy document as IAM returns it (URL-encoded or not).
pub fn policy_json(doc: &str) -> serde_json::Value {
    serde_json::from_str(doc)
        .or_else(|_| serde_json::from_str(&percent_decode(doc)))
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: Option<&str>, message: Option<&str>, gone: bool) {
        assert_eq!(is_not_found(code, message), gone, "{code:?} {message:?}");
    }

    #[test]
    fn not_found_answers_of_every_kind_the_provisioner_deletes() {
        for code in [
            "InvalidGroup.NotFound",
            "InvalidVpcID.NotFound",
            "InvalidSubnetID.NotFound",
            "InvalidInternetGatewayID.NotFound",
            "InvalidRouteTableID.NotFound",
            "InvalidAssociationID.NotFound",
            "InvalidAllocationID.NotFound",
            "NatGatewayNotFound",
            "InvalidLaunchTemplateId.NotFound",
            "InvalidLaunchTemplateName.NotFoundException",
            "LoadBalancerNotFound",
            "TargetGroupNotFound",
            "ListenerNotFound",
            "NoSuchEntity",
            "NoSuchHostedZone",
            "NoSuchBucket",
            "NoSuchKey",
            "NotFoundException",
            "TrailNotFoundException",
        ] {
            check(Some(code), None, true);
            check(Some(code), Some("anything"), true);
        }
        check(
            Some("ValidationError"),
            Some("AutoScalingGroup name not found - AutoScalingGroup 'demo-worker' not found"),
            true,
        );
        check(
            Some("InvalidChangeBatch"),
            Some(
                "[Tried to delete resource record set [name='pki.demo.internal.', type='A'] but it was not found]",
            ),
            true,
        );
    }

    #[test]
    fn other_answers_are_not_not_found() {
        check(None, None, false);
        check(None, Some("not found"), false);
        for code in [
            "DependencyViolation",
            "ResourceInUse",
            "DeleteConflict",
            "ScalingActivityInProgress",
            "KMSInvalidStateException",
            "Gateway.NotAttached",
            "AccessDenied",
            "UnauthorizedOperation",
            "Throttling",
            "InternalError",
            "InvalidGroup.InUse",
            "invalidgroup.notfound",
        ] {
            check(Some(code), None, false);
            check(Some(code), Some("resource not found"), false);
        }
        check(Some("ValidationError"), Some("Invalid max size"), false);
        check(Some("ValidationError"), None, false);
        check(
            Some("InvalidChangeBatch"),
            Some(
                "Tried to delete resource record set [name='pki.demo.internal.', type='A'] but the values provided do not match the current values",
            ),
            false,
        );
    }
}
