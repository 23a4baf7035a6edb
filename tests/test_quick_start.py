"""README's quick start is true as written: its `curl` lines post a photo that is in the repository, small, licensed
for it (docs/quickstart/README.md) and decoded as the service decodes uploads, and each line, sent as curl sends
it, is answered 200 by the ingress (in this process, with stand-in model handles: tests/ingress_fakes.py). That
`make serve` answers the same lines on a fresh copy of the checkout: tests/test_serving_install.py."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from deployments.uploads import MAX_IMAGE_BYTES
from pipeline.core.paths import REPO_ROOT
from pipeline.core.preprocessing import decode_photo
from tests.ingress_fakes import Service, in_process_service

pytestmark = pytest.mark.timeout(60)

README = REPO_ROOT / "README.md"
QUICK_START_PHOTO = REPO_ROOT / "docs" / "quickstart" / "photo.jpg"
PHOTO_MAX_BYTES = 100 * 1024  # a photo in the repository, not a phone's 5 MB
SERVICE = "http://localhost:8000"  # what the quick start's lines address (serve_config.yaml's port)


@dataclass
class CurlLine:
    """One `curl` line of the quick start, read as curl reads it: its form parts (`-F name=@file` or `-F name=value`),
    headers (`-H`), raw body (`--data-binary @file`) and URL."""

    line: str
    url: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Path | None = None

    @property
    def posted(self) -> list[Path]:
        return [*self.files.values(), *([self.body] if self.body else [])]


def quick_start_blocks(readme: str) -> list[str]:
    """The bash blocks of README's "Quick start" section."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```", section, re.M | re.S)


def expand(word: str, variables: dict[str, str]) -> str:
    """`word` with its `$name`s replaced as the shell would (only names set in the block)."""
    return re.sub(r"\$(\w+)", lambda name: variables[name[1]], word)


def curl_lines(readme: str, root: Path = REPO_ROOT) -> list[CurlLine]:
    """Every `curl` line of the quick start, its shell variables (`photo=...` lines before it) substituted and its
    files resolved from `root` (the commands run from the repository root)."""
    found = []
    for block in quick_start_blocks(readme):
        variables: dict[str, str] = {}
        for text in block.splitlines():
            words = shlex.split(text, comments=True)
            if len(words) == 1 and (assignment := re.fullmatch(r"(\w+)=(.*)", words[0])):
                variables[assignment[1]] = assignment[2]
                continue
            if not words or words[0] != "curl":
                continue
            words = [expand(word, variables) for word in words]
            curl, arguments = CurlLine(text), iter(words[1:])
            for word in arguments:
                if word == "-F":
                    name, value = next(arguments).split("=", 1)
                    if value.startswith("@"):
                        curl.files[name] = root / value[1:]
                    else:
                        curl.fields[name] = value
                elif word == "-H":
                    name, value = next(arguments).split(":", 1)
                    curl.headers[name.strip().lower()] = value.strip()
                elif word == "--data-binary":
                    value = next(arguments)
                    assert value.startswith("@"), f"{text}: the quick start posts files"
                    curl.body = root / value[1:]
                elif word.startswith("http"):
                    curl.url = word
                else:
                    raise AssertionError(f"{text}: {word!r} is not an option this test reads: teach it, or keep the line simple")
            found.append(curl)
    return found


LINES = curl_lines(README.read_text(encoding="utf-8"))


def test_the_quick_start_posts_a_photo_that_is_in_the_repository():
    assert len(LINES) >= 3, [curl.line for curl in LINES]
    for curl in LINES:
        assert curl.url.startswith(SERVICE + "/"), curl.line
        assert curl.posted, curl.line
        for path in curl.posted:
            assert path.resolve().is_relative_to(REPO_ROOT), f"{curl.line}: {path} is outside the repository"
            assert path.is_file(), f"{curl.line}: {path} does not exist"
    assert {path.resolve() for curl in LINES for path in curl.posted} == {QUICK_START_PHOTO}


def test_the_quick_start_photo_is_a_small_licensed_jpeg_that_the_service_decodes():
    data = QUICK_START_PHOTO.read_bytes()
    assert len(data) <= min(PHOTO_MAX_BYTES, MAX_IMAGE_BYTES)
    with Image.open(QUICK_START_PHOTO) as image:
        assert image.format == "JPEG"
    photo = decode_photo(data)  # what the ingress does with an upload (a bad one raises ImageError: a 4xx)
    assert photo.image.size == (600, 400)
    notes = (QUICK_START_PHOTO.parent / "README.md").read_text(encoding="utf-8")
    assert "CC0" in notes and "coffee.png" in notes


def test_a_curl_line_is_read_as_curl_reads_it(tmp_path: Path):
    readme = ("# x\n\n## Quick start\n\n```bash\nphoto=a.jpg  # a comment\n"
              "curl -F img=@$photo -F sku=oat-1 http://localhost:8000/hello   # original client\n"
              "curl -H 'content-type: image/jpeg' --data-binary @$photo http://localhost:8000/v1/recognize\n```\n\n## Next\n"
              "```bash\ncurl -F img=@elsewhere.jpg http://localhost:8000/hello\n```\n")
    form, raw = curl_lines(readme, tmp_path)
    assert (form.url, form.files, form.fields, form.body) == (f"{SERVICE}/hello", {"img": tmp_path / "a.jpg"}, {"sku": "oat-1"}, None)
    assert (raw.url, raw.headers, raw.body) == (f"{SERVICE}/v1/recognize", {"content-type": "image/jpeg"}, tmp_path / "a.jpg")


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


@pytest.mark.parametrize("curl", LINES, ids=lambda curl: curl.line.split("#")[0].strip())
def test_the_ingress_answers_each_quick_start_line_as_curl_sends_it(service, curl: CurlLine):
    path = curl.url.removeprefix(SERVICE)
    if curl.body is not None:
        response = service.client.post(path, content=curl.body.read_bytes(), headers=curl.headers)
    else:  # curl -F: multipart/form-data, a file part with the file's name and a type guessed from its extension
        files = {name: (file.name, file.read_bytes(), "image/jpeg") for name, file in curl.files.items()}
        response = service.client.post(path, files=files, data=curl.fields, headers=curl.headers)
    assert response.status_code == 200, (curl.line, response.text)
    assert set(response.json()) >= ({"item"} if path == "/hello" else {"photo", "products"})
