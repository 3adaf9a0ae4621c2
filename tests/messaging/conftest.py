from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.messaging.mail import MailServers, mail_servers, prepare_directory


@pytest.fixture
def mail(database_url: str, tmp_path: Path) -> Iterator[MailServers]:
    prepare_directory(database_url, tmp_path)
    with mail_servers(database_url, tmp_path) as servers:
        yield servers
