# A Debian host in a container: systemd as PID 1, Python for Ansible, and what a
# Docker engine inside needs. Molecule scenarios converge roles against it.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates \
      iproute2 iptables procps kmod gnupg curl \
 && apt-get clean
# The package lists stay: a real host has them, and roles trust apt's cache age.

# The test machines reach PyPI through an intercepting proxy; a corporate host would
# carry its CA the same way (system trust store, and pip told to use it).
COPY extra-ca.crt /usr/local/share/ca-certificates/kokoro-deploy-extra-ca.crt
RUN update-ca-certificates >/dev/null \
 && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf

# Units that make no sense in a container would only slow the boot or fail it.
RUN systemctl mask systemd-udevd.service systemd-udevd-kernel.socket \
      systemd-udevd-control.socket getty.target console-getty.service \
      systemd-logind.service systemd-firstboot.service \
      sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
 && rm -f /etc/machine-id /var/lib/dbus/machine-id && : > /etc/machine-id

STOPSIGNAL SIGRTMIN+3
VOLUME ["/var/lib/docker"]
CMD ["/lib/systemd/systemd"]
