"""Request bodies with the real shapes, built once per photo (no gevent here: the benchmark's client uses them too)."""

from __future__ import annotations

import secrets


def rest_template_body(photo: bytes, filename: str = "photo.jpg") -> tuple[bytes, dict]:
    """The body and headers Spring's RestTemplate sends for a MultiValueMap with one Resource part `img`."""
    boundary = secrets.token_urlsafe(24).replace("-", "a").replace("_", "b")
    body = b"".join([
        f"--{boundary}\r\n".encode(),
        f'Content-Disposition: form-data; name="img"; filename="{filename}"\r\n'.encode(),
        b"Content-Type: image/jpeg\r\n",
        f"Content-Length: {len(photo)}\r\n".encode(),
        b"\r\n",
        photo,
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    headers = {
        "Content-Type": f"multipart/form-data;charset=UTF-8;boundary={boundary}",
        "Accept": "application/json, application/*+json",
        "User-Agent": "Java/17.0.15",
    }
    return body, headers


def multipart_body(photo: bytes, part: str = "image", filename: str = "photo.jpg") -> tuple[bytes, dict]:
    boundary = secrets.token_hex(16)
    body = b"".join([
        f"--{boundary}\r\n".encode(),
        f'Content-Disposition: form-data; name="{part}"; filename="{filename}"\r\n'.encode(),
        b"Content-Type: image/jpeg\r\n\r\n",
        photo,
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
