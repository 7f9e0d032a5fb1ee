"""How a flow reaches the registry (or object store) it talks to: TLS and the name of the Secret
block holding its credentials. One pydantic base model shared by every flow's parameters
(:class:`~tasks.models.PullParameters`, :class:`~tasks.push_models.PushParameters`,
:class:`~tasks.transfer_models.TransferTarget`), so the fields, their UI descriptions and
:meth:`RegistryAccess.tls` are written once. The CLI fills them from the flags of
:mod:`app.flags`.

No credential is ever a field: a run names a Secret block, or relies on the credentials the
shell gave this process (:func:`tasks.runtime.give_credentials`), the D8_MIRROR_* (or AWS)
environment variables and docker's config.json (:mod:`tasks.credentials`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from d8mirror.registry import TLSOptions


class RegistryAccess(BaseModel):
    """TLS options and the credentials block of the registry a flow talks to."""

    insecure: bool = Field(False, description="Plain HTTP to the registry.")
    tls_skip_verify: bool = Field(
        False, description="Do not verify the registry's TLS certificate."
    )
    ca_file: str | None = Field(
        None, description="Extra CA bundle (PEM) to trust, beside the system's (SSL_CERT_FILE)."
    )
    credentials_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block with the credentials: "
        "'user:password' (or, for a pull's source, a bare license token); for S3 a JSON "
        "object with aws_access_key_id/aws_secret_access_key[/aws_session_token]. Default: "
        "D8_MIRROR_SOURCE_LOGIN/PASSWORD or D8_MIRROR_LICENSE_TOKEN (pull source), "
        "D8_MIRROR_REGISTRY_LOGIN/PASSWORD (push or OCI target), then docker config.json; "
        "the AWS credential chain for S3.",
    )

    def tls(self) -> TLSOptions:
        return TLSOptions(
            insecure=self.insecure, skip_verify=self.tls_skip_verify, ca_file=self.ca_file
        )
