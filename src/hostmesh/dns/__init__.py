"""DNS for hostmesh: the one Cloudflare reconciler, public-IP detection, `hostmesh ddns sync`.

`reconcile` imports the `cloudflare` SDK only when a client is built, so this
package imports on nodes without the `hostmesh[cloudflare]` extra.
"""
