//! A response body sent as the parts it is already kept in, each one frame, with
//! its exact length up front (so a Content-Length, not chunks).

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct Parts {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl Parts {
    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        Self { parts, remaining }
    }
}

impl Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.parts.pop_front().map(|part| {
            this.remaining -= part.len() as u64;
            Ok(Frame::data(part))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_every_part_in_order_and_says_its_length_first() {
        let parts = ["# own\n", "", "a 1\n", "b 2\n"].map(Bytes::from);
        let body = Parts::new(parts);
        assert_eq!(body.size_hint().exact(), Some(14));
        assert!(!body.is_end_stream());
        let bytes = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"# own\na 1\nb 2\n");
        assert!(Parts::new([Bytes::new()]).is_end_stream());
    }
}
