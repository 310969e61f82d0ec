"""S3-compatible backend (AWS S3, MinIO, Ceph RGW...) through boto3.

Path-style addressing, configurable endpoint/region/credentials, botocore's
standard retry mode, multipart upload above a threshold, range gets.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ferryman.repository.backend.base import check_name
from ferryman.repository.errors import BackendError, ObjectNotFound, TransientBackendError

DEFAULT_MULTIPART_THRESHOLD = 64 << 20
DEFAULT_MULTIPART_CHUNKSIZE = 16 << 20
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_TRANSIENT = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
}


def make_client(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    max_attempts: int = 5,
    max_pool_connections: int = 16,
) -> Any:
    """A boto3 S3 client: path-style addressing, standard retries, bounded timeouts.

    Credentials default to the usual AWS environment variables / files. Shared by
    the S3 repository backend and the S3 source.
    """
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=max_pool_connections,
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
        region_name=region,
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


class S3Backend:
    """Objects are keys under ``prefix`` in ``bucket``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        max_attempts: int = 5,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        max_pool_connections: int = 16,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        self.client: Any = make_client(
            endpoint=endpoint,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            max_attempts=max_attempts,
            max_pool_connections=max_pool_connections,
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            use_threads=False,
        )

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, name: str) -> str:
        return self.prefix + check_name(name)

    def _error(self, exc: Exception, name: str, action: str) -> Exception:
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _NOT_FOUND or status == "404":
                return ObjectNotFound(f"{name}: not found in {self.describe()}")
            message = f"{name}: cannot {action} {self.describe()}: {code or status}"
            if code in _TRANSIENT or status in _TRANSIENT:
                return TransientBackendError(message)
            return BackendError(message)
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return BackendError(f"{self.describe()}: no S3 credentials configured")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return TransientBackendError(f"{name}: cannot {action} {self.describe()}: {exc}")
        return exc

    def get(self, name: str) -> bytes:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
            data: bytes = resp["Body"].read()
            return data
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, name, "read from") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative range")
        if length == 0:
            return b""
        try:
            resp = self.client.get_object(
                Bucket=self.bucket,
                Key=self._key(name),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
            data: bytes = resp["Body"].read()
            return data
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise self._error(exc, name, "read from") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, name, "read from") from None

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        key = self._key(name)
        try:
            if len(data) >= self.transfer.multipart_threshold:
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=self.transfer)
            else:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, name, "write to") from None
        except boto3.exceptions.S3UploadFailedError as exc:
            raise TransientBackendError(
                f"{name}: upload to {self.describe()} failed: {exc}"
            ) from None

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            err = self._error(exc, name, "delete in")
            if not isinstance(err, ObjectNotFound):
                raise err from None

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield str(obj["Key"])[len(self.prefix) :]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, prefix, "list") from None

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
        except ObjectNotFound:
            return False
        return True

    def size(self, name: str) -> int:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return int(resp["ContentLength"])
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, name, "stat in") from None

    def create_bucket(self) -> None:
        """Create the bucket (for tests and first-time setup); existing is fine."""
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._error(exc, self.bucket, "create bucket") from None
