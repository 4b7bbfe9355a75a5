# coldvault as a container image: one statically linked binary on an empty base, as the
# Kubernetes recipe (docs/recipes/kubernetes-cronjob.yaml) runs it.
#
# The binary is built outside the image (no toolchain in it, no base image to pull), then
# copied in with the CA roots. From the repository's root:
#
#   RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' cargo build --release --locked --target x86_64-unknown-linux-gnu
#   docker build --build-context bin=target/x86_64-unknown-linux-gnu/release --build-context certs=/etc/ssl/certs -t coldvault:0.1.0 .
#
# What the binary needs at run time: no shared library (glibc is linked in; since glibc 2.34
# its `files` and `dns` host lookups are part of libc itself, so a static binary resolves names
# from the /etc/hosts and /etc/resolv.conf every container runtime mounts, without NSS modules
# — a glibc 2.36 static binary in an empty root resolves through /etc/hosts), and CA roots to
# check Key Vault's and Entra ID's TLS certificates: it trusts the platform's store, which
# `scratch` lacks, so the build host's bundle is copied to the path the verifier reads
# (SSL_CERT_FILE names it too). `getrandom_backend="linux_getrandom"` makes the random source the
# getrandom system call alone: in a static binary the default backend cannot find glibc's
# getrandom() and falls back to /dev/random and /dev/urandom, which an empty root without a
# runtime-provided /dev lacks (checked: a backup and a verify in a chroot holding only the
# binary, the CA bundle and /etc/hosts).
FROM scratch
COPY --from=certs ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=bin coldvault /coldvault
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Not root: the recipe's securityContext (runAsUser and fsGroup 65532) lets it write /backups.
USER 65532:65532
ENTRYPOINT ["/coldvault"]
