"""Config precedence, origins, validation errors naming file and line, masking."""

import pytest

from blobctl.config import SETTINGS, Config, ConfigFile, Mount, default_store_path, mask, normalize_prefix
from blobctl.errors import ConfigError, UsageError


@pytest.fixture
def user_config(tmp_path):
    return tmp_path / "user-config.toml"


def test_defaults_and_precedence(store_dir, user_config, monkeypatch):
    config = Config.load(str(store_dir))
    assert config.lookup("compression_level") == (3, "default")
    user_config.write_text("compression_level = 5\nmax_size = \"1 GB\"\n")
    config = Config.load(str(store_dir))
    assert config.lookup("compression_level") == (5, str(user_config))
    store_dir.mkdir()
    (store_dir / "config.toml").write_text("compression_level = 7\n")
    config = Config.load(str(store_dir))
    assert config.lookup("compression_level") == (7, str(store_dir / "config.toml"))
    assert config.get("max_size") == 10**9
    monkeypatch.setenv("BLOBCTL_COMPRESSION_LEVEL", "9")
    assert Config.load(str(store_dir)).lookup("compression_level") == (9, "env:BLOBCTL_COMPRESSION_LEVEL")


def test_store_location_precedence(tmp_path, user_config, monkeypatch):
    """`config get store` says which store the command uses, and why."""
    monkeypatch.delenv("BLOBCTL_STORE")
    default = Config.load()
    assert default.lookup("store") == (str(default_store_path()), "default")
    user_config.write_text(f'store = "{tmp_path / "from-user"}"\n')
    assert Config.load().store_path == tmp_path / "from-user"
    assert Config.load().lookup("store") == (str(tmp_path / "from-user"), str(user_config))
    monkeypatch.setenv("BLOBCTL_STORE", str(tmp_path / "from-env"))
    assert Config.load().store_path == tmp_path / "from-env"
    assert Config.load().lookup("store") == (str(tmp_path / "from-env"), "env:BLOBCTL_STORE")
    assert Config.load(str(tmp_path / "from-flag")).store_path == tmp_path / "from-flag"
    assert Config.load(str(tmp_path / "from-flag")).lookup("store") == (str(tmp_path / "from-flag"), "--store")


def test_store_paths_mean_one_directory_wherever_a_command_runs(tmp_path, user_config, monkeypatch):
    """An empty --store (an unset variable) is refused rather than falling back to the
    usual store; '~' is expanded in every layer; the user config's store is saved
    absolute, and a hand-written relative one is taken from the config file's directory."""
    monkeypatch.delenv("BLOBCTL_STORE")
    with pytest.raises(UsageError, match="--store is empty"):
        Config.load("")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Config.load("~/flag").store_path == tmp_path / "home" / "flag"
    monkeypatch.setenv("BLOBCTL_STORE", "~/env")
    assert Config.load().store_path == tmp_path / "home" / "env"
    monkeypatch.delenv("BLOBCTL_STORE")
    monkeypatch.chdir(tmp_path)
    Config.load().set("store", "relative", user=True)
    assert 'store = "' + str(tmp_path / "relative") + '"' in user_config.read_text()
    user_config.write_text('store = "by-hand"\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Config.load().store_path == tmp_path / "by-hand"
    with pytest.raises(UsageError, match="empty path"):
        Config.load().set("store", "", user=True)
    user_config.write_text('store = ""\n')
    with pytest.raises(ConfigError, match="empty path"):
        Config.load()


def test_an_empty_blobctl_config_is_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOBCTL_CONFIG", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert Config.load(str(tmp_path / "s")).user_file.path == tmp_path / "xdg" / "blobctl" / "config.toml"


def test_s3_settings_fall_back_to_aws_variables_and_say_so(store_dir, monkeypatch):
    """What an S3 remote will use, as `config list --show-origin` shows it."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert Config.load(str(store_dir)).lookup("s3.region") == ("us-east-1", "default")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-aws")
    config = Config.load(str(store_dir))
    assert config.lookup("s3.region") == ("eu-west-1", "env:AWS_DEFAULT_REGION")
    assert config.remote_settings().s3_endpoint == "http://from-aws"
    monkeypatch.setenv("BLOBCTL_S3_REGION", "ap-south-1")  # blobctl's own settings first
    assert Config.load(str(store_dir)).lookup("s3.region") == ("ap-south-1", "env:BLOBCTL_S3_REGION")
    monkeypatch.setenv("BLOBCTL_S3_ENDPOINT", "")  # empty is unset: on to AWS_*, not "" to the client
    assert Config.load(str(store_dir)).lookup("s3.endpoint") == ("http://from-aws", "env:AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    assert Config.load(str(store_dir)).lookup("s3.endpoint") == (None, "default")


@pytest.mark.parametrize("key,value", [
    ("s3.endpoint", "127.0.0.1:9000"), ("s3.endpoint", " http://127.0.0.1:9000"), ("s3.endpoint", "not a url"),
    ("s3.endpoint", "ftp://host"), ("s3.endpoint", "http://"), ("s3.access_key_id", "minioadmin\r"),
    ("s3.secret_access_key", "two words"), ("s3.session_token", "line\nbreak"), ("s3.region", "eu\x1b[2J"),
])
def test_s3_settings_the_client_cannot_use_are_refused(store_dir, monkeypatch, key, value):
    """The S3 client crashed (a Rust panic, 172 lines) at the first request with these:
    `config set` refuses them, and so does a command finding one in a file or in AWS_*;
    a secret's value is never repeated in the message."""
    with pytest.raises(UsageError) as caught:
        Config.load(str(store_dir)).set(key, value, user=False)
    assert key in str(caught.value) and (key == "s3.endpoint" or value not in str(caught.value))
    if key == "s3.access_key_id":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", value)
        with pytest.raises(ConfigError, match="env:AWS_ACCESS_KEY_ID: s3.access_key_id: invalid value \\(not shown\\)"):
            Config.load(str(store_dir)).remote_settings()


def test_secrets_never_show_in_errors_and_endpoints_lose_their_password(store_dir):
    store_dir.mkdir()
    (store_dir / "config.toml").write_text("[s3]\nsecret_access_key = 98765432109876\n")
    with pytest.raises(ConfigError) as caught:
        Config.load(str(store_dir))
    assert "98765432109876" not in str(caught.value) and "config.toml:2" in str(caught.value)
    (store_dir / "config.toml").write_text('[s3]\nendpoint = "http://admin:hunter2@127.0.0.1:9000"\n')
    setting = SETTINGS["s3.endpoint"]
    assert mask(setting, Config.load(str(store_dir)).get("s3.endpoint")) == "http://127.0.0.1:9000"


@pytest.mark.parametrize("text,line,needle", [
    ("durability = \"on\"\nmax_size = \"lots\"\n", 2, "max_size: invalid size"),
    ("\n\nbogus_key = 1\n", 3, "unknown key 'bogus_key'"),
    ("compression_level = 99\n", 1, "compression_level"),
    ("[s3]\nendpoint = 5\n", 2, "s3.endpoint"),
    ("auto_gc = \"maybe\"\n", 1, "auto_gc"),
    ("jobs = inf\n", 1, "whole number"),
    ("jobs = 4.5\n", 1, "whole number"),
    ("jobs = 4\nmax_size = \"1G\"\ns3.regoin = \"eu\"\n", 3, "unknown key 's3.regoin'"),  # a dotted key
    ("jobs = 4\n\n[s3]\nendpoint = \"http://x\"\njobs = 2\n", 5, "unknown key 's3.jobs'"),  # not the top-level jobs
    ("[s3]\n'region' = 5\n", 2, "s3.region"),
    ("durability = \"sometimes\"\n", 1, "durability"),
])
def test_bad_values_name_file_and_line(store_dir, text, line, needle):
    store_dir.mkdir()
    path = store_dir / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Config.load(str(store_dir))
    assert f"{path}:{line}:" in str(caught.value) and needle in str(caught.value)


def test_malformed_toml_names_file_and_line(store_dir):
    store_dir.mkdir()
    (store_dir / "config.toml").write_text("a = 1\nmax_size = = 3\n")
    with pytest.raises(ConfigError, match=r"config.toml: malformed TOML: .*line 2"):
        Config.load(str(store_dir))


def test_set_unset_round_trip_keeps_types(store_dir):
    config = Config.load(str(store_dir))
    config.set("max_size", "20 GB", user=False)
    config.set("jobs", "4", user=False)
    config.set("auto_gc", "false", user=False)
    text = (store_dir / "config.toml").read_text()
    assert 'max_size = "20 GB"' in text and "jobs = 4" in text and "auto_gc = false" in text
    reloaded = Config.load(str(store_dir))
    assert reloaded.get("max_size") == 20 * 10**9 and reloaded.get("jobs") == 4 and reloaded.get("auto_gc") is False
    assert reloaded.unset("jobs", user=False) and not reloaded.unset("jobs", user=False)
    assert Config.load(str(store_dir)).get("jobs") == 8
    with pytest.raises(UsageError):
        config.set("jobs", "many", user=False)
    with pytest.raises(UsageError):
        config.set("nope", "1", user=False)
    with pytest.raises(UsageError):
        config.set("store", "/x", user=False)


@pytest.mark.parametrize("typed,value", [("ON", "on"), ("Off", "off"), ("false", "off"), ("yes", "on")])
def test_choices_take_any_case_and_durability_takes_booleans(store_dir, typed, value):
    """Booleans took `ON` and `yes` but durability (on/off) refused `ON` and `false`."""
    config = Config.load(str(store_dir))
    config.set("durability", typed, user=False)
    assert Config.load(str(store_dir)).get("durability") == value
    config.set("verify_reads", "SHA256", user=False)
    assert Config.load(str(store_dir)).get("verify_reads") == "sha256"


def test_mounts_parse_and_validate(store_dir):
    store_dir.mkdir()
    path = store_dir / "config.toml"
    path.write_text('[[mounts]]\nprefix = "team"\nremote = "s3://bucket/x"\n'
                    '[[mounts]]\nprefix = ""\nremote = "/srv/store"\nread_only = true\n')
    config = Config.load(str(store_dir))
    assert config.mounts == [Mount("team/", "s3://bucket/x"), Mount("", "/srv/store", True)]
    path.write_text('[[mounts]]\nprefix = "team"\nremote = "ftp://x"\n')
    with pytest.raises(ConfigError, match="unknown remote URL scheme 'ftp'"):
        Config.load(str(store_dir))
    path.write_text('[[mounts]]\nprefix = "../up"\nremote = "/x"\n')
    with pytest.raises(ConfigError, match=r"config.toml:1: mount"):
        Config.load(str(store_dir))
    path.write_text('mounts = "nope"\n')
    with pytest.raises(ConfigError):
        Config.load(str(store_dir))


@pytest.mark.parametrize("text, line, needle", [
    ('max_size = "1 GB"\n\n[[mounts]]\nprefix = "team"\nremote = "/r"\n\n[[mounts]]\nprefix = "o"\n'
     'remote = "ftp://x"\n', 7, "mount 'o'"),
    ('[[mounts]]\nprefix = "team"\nremote = "/r"\n[[mounts]]\nprefix = "team/"\nremote = "/q"\n', 4,
     "team/ is mounted twice"),
    ('mounts = [\n    { prefix = "a/", remote = "/r" },\n    { prefix = "b/", remote = "ftp://x" },\n]\n', 3,
     "mount 'b/'"),
    ('mounts = [\n    { remote = "/r" },\n    { prefix = "b/", remote = "/q" },\n]\n', 2,
     "malformed"),
    ('mounts = [\n  # shared ones\n  {prefix = "a", remote = "/x"},  # team\n  {prefix = "b", remote = "/y", typo = 1},\n]\n',
     4, "malformed"),
])
def test_a_bad_mount_entry_is_named_at_its_own_line(store_dir, text, line, needle):
    """Each entry of several, in either TOML form (`mount` writes the inline one); two
    entries for one prefix are refused as `mount` refuses a second one."""
    store_dir.mkdir()
    (store_dir / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=rf"config.toml:{line}: {needle}"):
        Config.load(str(store_dir))


def test_mounts_are_refused_in_user_config(tmp_path):
    path = tmp_path / "u.toml"
    path.write_text('[[mounts]]\nprefix = "a"\nremote = "/x"\n')
    with pytest.raises(ConfigError, match="store's config"):
        ConfigFile.load(path, allow_mounts=False)


def test_normalize_prefix():
    assert normalize_prefix("") == "" and normalize_prefix("a") == "a/" and normalize_prefix("a/") == "a/"


def test_config_set_never_replaces_a_device_named_as_the_user_config(tmp_path, monkeypatch):
    """BLOBCTL_CONFIG=/dev/null keeps a user config out of the way; `config set --user`
    then renamed its temp file over /dev/null (as root: every later '> /dev/null' on
    the machine filled a regular file) and said 'set in /dev/null'."""
    import os
    import stat

    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot make a device node (needs root)")
    monkeypatch.setenv("BLOBCTL_CONFIG", str(device))
    config = Config.load(str(tmp_path / "store"))
    with pytest.raises(UsageError, match="not a regular file"):
        config.set("gc_grace", "2h", user=True)
    assert stat.S_ISCHR(device.stat().st_mode)
