"""The local cluster's configuration, written before every start: a cluster made by an
earlier version is brought up to date, nothing is trusted, and the URL names the public
socket once it exists."""

from pathlib import Path

from sqlalchemy.engine import make_url

from caravan.infra.postgres import LocalPostgres


def cluster(tmp_path: Path) -> LocalPostgres:
    pg = LocalPostgres(tmp_path / "pg", port=15999)
    pg._as_service_user = False  # file contents only: no chown to the postgres OS user
    pg.data_dir.mkdir(parents=True)
    return pg


def test_an_older_clusters_settings_and_trusting_rules_are_replaced(tmp_path: Path) -> None:
    pg = cluster(tmp_path)
    (pg.data_dir / "postgresql.conf").write_text(
        "port = 5432\n\n# --- caravan local cluster ---\nlisten_addresses = '127.0.0.1'\n"
        f"unix_socket_directories = '{pg.data_dir}'\nmax_connections = 200\n"
    )
    (pg.data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all all trust\n")
    pg._configure()
    pg._configure()  # before every start: the same result
    conf = (pg.data_dir / "postgresql.conf").read_text()
    assert conf.startswith("port = 5432\n")  # what initdb wrote stays
    assert conf.count("# --- caravan local cluster ---") == 1
    assert conf.count("unix_socket_directories") == 1
    assert f'unix_socket_directories = \'"{pg.data_dir}","{pg.socket_dir}"\'' in conf
    assert "fsync = on" in conf and "synchronous_commit = on" in conf
    rules = [
        line.split()
        for line in (pg.data_dir / "pg_hba.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert [rule[-1] for rule in rules] == [
        "peer",
        "scram-sha-256",
        "scram-sha-256",
        "scram-sha-256",
    ]
    assert rules[0][:3] == ["local", "all", pg.cluster_user]
    assert pg.socket_dir.is_dir() and pg.socket_dir.stat().st_mode & 0o777 == 0o755


def test_the_url_names_the_public_socket_once_it_exists(tmp_path: Path) -> None:
    pg = cluster(tmp_path)
    tcp = make_url(pg.url)  # no socket yet: a cluster started by an earlier version
    assert (tcp.host, tcp.port, dict(tcp.query)) == ("127.0.0.1", 15999, {})
    pg.socket_dir.mkdir()
    (pg.socket_dir / ".s.PGSQL.15999").touch()
    unix = make_url(pg.url)
    assert (unix.host, unix.port, dict(unix.query)) == (None, 15999, {"host": str(pg.socket_dir)})
    assert (unix.username, unix.database) == ("caravan", "caravan")


def test_a_socket_path_too_long_in_bytes_falls_back_though_short_in_characters(
    tmp_path: Path,
) -> None:
    """The socket address's limit is in bytes: a Chinese path's characters take 3 each."""
    room = 100 - len(str(tmp_path / "socket" / ".s.PGSQL.15999")) - 1
    pg = LocalPostgres(tmp_path / ("沙湾县电子商务中心" * 10)[:room], port=15999)
    pg._as_service_user = False
    socket = str(pg.base_dir / "socket" / ".s.PGSQL.15999")
    assert len(socket) <= 100 < len(socket.encode())
    assert pg.root != pg.base_dir and str(pg.root).startswith("/var/tmp/caravan-")
