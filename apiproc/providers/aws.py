"""AWS Signature Version 4 for one request, done by botocore (the `bedrock` extra).

    signer = SigV4Signer(service="bedrock", region="us-east-1")
    headers = signer.sign("POST", url, body, {"content-type": "application/json"})

No hand-written signing: botocore's `SigV4Auth` signs, with credentials from the standard
AWS chain (environment, shared config and credentials files, SSO, container and
instance roles), exactly as the AWS CLI and the official Anthropic SDK find them.
Credentials that expire are refreshed by botocore when a request is signed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apiproc.errors import MissingExtra, SettingsError

# The headers signing adds; the request sends them beside the ones it signed.
SIGNING_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token")


class SigV4Signer:
    """Signs requests for one AWS service in one region."""

    def __init__(self, service: str, region: str, api: str = "bedrock") -> None:
        try:
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.session import Session
        except ImportError:
            raise MissingExtra(api, "bedrock", "botocore") from None
        credentials = Session().get_credentials()
        if credentials is None:
            raise SettingsError(
                "No AWS credentials found: configure them as for the AWS CLI (aws configure, "
                "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)."
            )
        self.service = service
        self.region = region
        self._credentials = credentials
        self._auth = SigV4Auth
        self._request = AWSRequest

    def sign(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, str]:
        """The signing headers for this exact method, URL, body and headers."""
        request: Any = self._request(method=method, url=url, data=body, headers=dict(headers))
        frozen = self._credentials.get_frozen_credentials()
        self._auth(frozen, self.service, self.region).add_auth(request)
        return {
            name.lower(): value
            for name, value in request.headers.items()
            if name.lower() in SIGNING_HEADERS
        }
