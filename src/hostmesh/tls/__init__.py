"""The cluster's one ACME issuer (`hostmesh acme renew`), run on the primary only.

- ``dns01``: DNS-01 challenge records (TXT) through the Cloudflare API, owned by
  the comment ``hostmesh:<cluster>:acme``.
- ``issuer``: the ACME account, one order per set of names, renewal at 2/3 of
  the lifetime, backoff on failure, atomic certificate files.
- ``cli``: the ``hostmesh acme renew`` command (one pass; a systemd timer runs it).

See docs/tls.md.
"""
