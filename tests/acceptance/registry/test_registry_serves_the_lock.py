"""The registry serves every image ansible/build_images.yml recorded in the lock, by its
digest: what the fleet's hosts pull is there, unchanged.

Settings as in test_registry.py, and KOKORO_IMAGE_LOCK: the lock on this machine
(default: stack_image_lock_path when the inventory sets a plain path; skipped when
there is none).
"""

from registry_client import get, req

# conftest.py: these checks are for the registry's host.
GROUP = "registries"
# What `docker push` stores: Docker's schema 2 manifest (or an OCI one), or a list of them.
ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def test_every_locked_image_is_served_by_its_digest(host, registry, ca_pem, tls_names, login,
                                                    lock):
    images = (lock or {}).get("images") or {}
    assert images, "the lock records no image"
    user, password = login
    address = lock["registry"].split("/", 1)[0]
    reqs, expected = [], []
    for recipe, entry in sorted(images.items()):
        repo_ref, _, digest = entry["ref"].partition("@")
        assert repo_ref.startswith(address + "/"), f"{recipe}: {entry['ref']} is not on {address}"
        repo = repo_ref.removeprefix(address + "/")
        reqs.append(req(registry, tls_names[0], ca_pem, user=user, password=password,
                        method="HEAD", path=f"/v2/{repo}/manifests/{digest}", accept=ACCEPT))
        expected.append((recipe, digest))
    for (recipe, digest), answer in zip(expected, get(host, reqs), strict=True):
        assert answer.get("status") == 200, f"{recipe}: {digest} not served: {answer}"
        assert answer["digest"] == digest, f"{recipe}: served {answer['digest']}, locked {digest}"
