"""pytest plugin (-p hangin_shim): the `hangin` fixture for test_chat_channel.py (see client.py)."""
import pytest

from client import Hangin


@pytest.fixture
def hangin(api):
    h = Hangin(api)
    yield h
    h.close()
