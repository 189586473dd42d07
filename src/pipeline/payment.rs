//! x402 payment past a used-up quota: reading and verifying the payment before the
//! request is forwarded, and settling it after the upstream served it.

use http::{Request, Response};

use crate::body::Body;
use crate::limits::Subject;
use crate::limits::quota::Quotas;
use crate::limits::x402::{Payment, PaymentError, Refused, X402};
use crate::metrics::{Metrics, PaymentEvent};
use crate::rejection::Responder;

/// What paying for one request needs.
pub(super) struct Payments<'g> {
    pub(super) x402: &'g X402,
    pub(super) metrics: &'g Metrics,
    /// The answers of the origin the request addressed.
    pub(super) responder: &'g Responder,
}

impl Payments<'_> {
    /// Reads and verifies the payment of a request for `resource` that is over its
    /// quota; the answer to send instead when there is none or it does not verify.
    pub(super) async fn pay<B>(
        &self,
        request: &Request<B>,
        resource: &str,
        unix: i64,
    ) -> Result<Payment, Response<Body>> {
        let refused = match self.x402.read(request.headers(), resource, unix) {
            Ok(Some(payment)) => match self.x402.verify(&payment, unix).await {
                Ok(()) => {
                    self.metrics.payment(PaymentEvent::Verified);
                    return Ok(payment);
                }
                Err(refused) => refused,
            },
            Ok(None) => Refused {
                error: PaymentError::Required,
                reason: None,
            },
            Err(error) => Refused {
                error,
                reason: None,
            },
        };
        self.metrics.payment(match refused.error {
            PaymentError::Required => PaymentEvent::Required,
            PaymentError::Malformed | PaymentError::Rejected => PaymentEvent::Rejected,
            PaymentError::Unavailable => PaymentEvent::Unavailable,
        });
        Err(self.refuse(resource, &refused))
    }

    /// Settles the payment of a request that was served; a payment that does not
    /// settle is not served (the upstream's answer is dropped), and a request the
    /// upstream failed (status 400 or above) is not charged. A payment worth more
    /// than one request credits the rest to the subject's quota.
    pub(super) async fn settle(
        &self,
        payment: &Payment,
        resource: &str,
        (subject, quotas): (&Subject<'_>, &Quotas),
        mut response: Response<Body>,
        unix: i64,
    ) -> Response<Body> {
        if response.status().as_u16() >= 400 {
            return response;
        }
        match self.x402.settle(payment).await {
            Ok((name, value)) => {
                self.metrics.payment(PaymentEvent::Settled);
                response.headers_mut().insert(name, value);
                let extra = self.x402.payments().requests_per_payment - 1;
                if let (Some(quota), true) = (&subject.limits.quota, extra > 0) {
                    quotas.credit(subject, quota, extra, unix);
                }
                response
            }
            Err(refused) => {
                self.metrics.payment(PaymentEvent::SettleFailed);
                tracing::debug!(?refused, "an x402 payment did not settle");
                self.refuse(resource, &refused)
            }
        }
    }

    /// The answer to a payment that is missing or did not go through: the
    /// requirements again with a 402, or a 400 / 503 envelope.
    fn refuse(&self, resource: &str, refused: &Refused) -> Response<Body> {
        let reason = refused.reason.as_deref();
        match refused.error {
            PaymentError::Required | PaymentError::Rejected => {
                let offer = self.x402.offer(
                    resource,
                    reason.unwrap_or("the request quota of this period is used up"),
                );
                self.responder.respond_payment(
                    refused.error,
                    Some((&offer.header, &offer.accepts_v1)),
                    reason,
                )
            }
            PaymentError::Malformed | PaymentError::Unavailable => {
                self.responder.respond_payment(refused.error, None, reason)
            }
        }
    }
}
