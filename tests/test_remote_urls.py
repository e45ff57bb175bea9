"""Remote URLs a user mistypes: refused at mount with one error line that never shows the
credentials, and a bad one already in a config is a usage error when used, never a
traceback."""

import pytest

EXIT_USAGE = 2
SECRET = "Secr3tPW"


@pytest.mark.parametrize("url", [
    f"htps://alice:{SECRET}@host/dav",  # unknown scheme
    f"http:/alice:{SECRET}@host/dav",  # a '/' missing
    f"https://alice:{SECRET}@",  # no host
    f"https://alice:{SECRET}@host:99999/x",  # port out of range
    f"https://alice:{SECRET}@host:abc/x",  # port not a number
    f"https://alice:{SECRET}@[::1/x",  # unclosed IPv6 bracket
    f"https://alice:{SECRET}@host/\tx",  # a control character
])
def test_a_bad_remote_url_is_refused_without_showing_its_credentials(blobctl, tmp_path, url):
    store = tmp_path / "store"
    result = blobctl("--store", store, "mount", "team", url)
    assert result.code == EXIT_USAGE, result.err
    assert "Traceback" not in result.err and SECRET not in result.err
    assert blobctl("--store", store, "mount", "--json").out.strip() in (b"", b"[]")


def test_a_bad_http_url_in_the_config_fails_when_used_and_can_be_unmounted(blobctl, tmp_path):
    store = tmp_path / "store"
    blobctl("--store", store, "put", "-", input=b"x", check=True)
    (store / "config.toml").write_text(
        f'[[mounts]]\nprefix = "team/"\nremote = "https://alice:{SECRET}@[::1/x"\n')
    for args in (("mount",), ("get", "team/x"), ("mount", "other", str(tmp_path / "other")), ("umount", "team")):
        result = blobctl("--store", store, *args)
        assert "Traceback" not in result.err and SECRET not in result.err + result.text, (args, result.err)
        assert result.code in (0, EXIT_USAGE), (args, result.code, result.err)
    assert blobctl("--store", store, "get", "team/x").code == 3  # unmounted: just not found
