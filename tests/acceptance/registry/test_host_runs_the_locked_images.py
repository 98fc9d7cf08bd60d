"""A kokoro host with stack_images_source=registry holds the images the lock names, by
digest, built from the lock's recipe: the very images the builder pushed.

Settings: KOKORO_IMAGE_LOCK, as in test_registry_serves_the_lock.py.
"""

import json

import pytest
from registry_client import inventory

# conftest.py: these checks are for the hosts that pull.
GROUP = "kokoro_hosts"
RECIPE_LABEL = "org.kokoro-deploy.recipe"


def test_the_host_holds_the_locked_images_it_pulled_unchanged(host, lock):
    if inventory(host).get("stack_images_source") != "registry":
        pytest.skip("this host does not pull from the fleet's registry")
    held = {}
    for recipe, entry in sorted((lock.get("images") or {}).items()):
        cmd = host.run("docker image inspect %s", entry["ref"])
        if cmd.rc == 0:
            held[recipe] = (entry, json.loads(cmd.stdout)[0])
    assert held, "the host holds none of the lock's images: run site.yml (or the stack role)"
    for recipe, (entry, image) in held.items():
        assert entry["ref"] in image["RepoDigests"], f"{recipe}: {image['RepoDigests']}"
        label = (image["Config"].get("Labels") or {}).get(RECIPE_LABEL)
        assert label == entry["recipe"], f"{recipe}: recipe {label}, locked {entry['recipe']}"
