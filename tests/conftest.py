"""Shared fixtures: one identity and one key file per test session."""

from pathlib import Path

import polars as pl
import pytest

from cleanroom.keys.identity import create_identity, load_identity
from cleanroom.keys.secret import new_key

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("partner")


@pytest.fixture(scope="session")
def identity_dir(workdir: Path) -> Path:
    folder = workdir / "identity"
    create_identity("Riverside Tenants Union", folder, PASSPHRASE.encode())
    return folder


@pytest.fixture(scope="session")
def identity(identity_dir: Path):
    return load_identity(identity_dir, PASSPHRASE.encode())


@pytest.fixture(scope="session")
def key_file(workdir: Path) -> Path:
    path = workdir / "consortium.key"
    new_key("riverside-2026", epoch=1).save(path)
    return path


@pytest.fixture
def passphrase_env(monkeypatch):
    monkeypatch.setenv("CLEANROOM_PASSPHRASE", PASSPHRASE)


@pytest.fixture
def contacts() -> pl.DataFrame:
    """A small messy contact list: several emails per person, blanks, bad values."""
    return pl.DataFrame(
        {
            "Email": ["Jane.Doe@Gmail.com", "  bob@example.org ", "not-an-email", None, "x@y.org"],
            "Email 2": ["jane.doe+news@googlemail.com", None, "", "carla@example.net", None],
            "Mobile": ["(503) 555-0123", "503.555.0199", None, "garbage", "+1 503 555 0142"],
            "First": ["Jane", "Robert", "Ann", "Carla", None],
            "Last": ["Doe", "Smith", "Lee", "Núñez", None],
            "DOB": ["1984-07-09", "03/15/1975", "", "1990-01-31", None],
            "ZIP": ["97201-1234", "97202", "97203", "7204", None],
            "Member No": ["M1", "M2", "M3", "M4", "M5"],
        }
    )


def make_identities(folder: Path, names: list[str], passphrase: bytes) -> dict:
    """Identities `folder/<name>` with cheap passphrase hashing (its cost is recorded in
    each file, so loading is unaffected); name -> loaded Identity."""
    from cleanroom.keys import identity as ident

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ident, "SCRYPT_LOG_N", 10)
        for name in names:
            create_identity(name, folder / name, passphrase)
    return {name: load_identity(folder / name, passphrase) for name in names}
