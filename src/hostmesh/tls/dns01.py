"""DNS-01 challenge records through the Cloudflare API, with hostmesh's ownership rule.

Every TXT record the issuer writes carries the comment ``hostmesh:<cluster>:acme``
and sits at ``_acme-challenge.<name>``; only records with exactly that comment,
type TXT and such a name are ever deleted, so other tools' TXT records (and
the A/AAAA records the DNS reconciler owns, which it lists by type) are never
touched. Each order costs two API writes: one atomic batch that creates every
challenge record of the order, one that deletes them (plus one up front when a
crashed earlier run left some behind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hostmesh.module_utils._dns_reconcile import (
    DNSError,
    InvalidSpec,
    Reconciler,
    make_client,
    owner_comment,
)

CHALLENGE_LABEL = "_acme-challenge"
TXT_TTL = 60  # Cloudflare's minimum; the CA looks the record up right after it is made
OWNER_NODE = "acme"  # the owner comment's last field: hostmesh:<cluster>:acme


def challenge_name(domain: str) -> str:
    """``_acme-challenge.<domain>`` (a wildcard's challenge sits at its base name)."""
    base = domain.removeprefix("*.")
    return f"{CHALLENGE_LABEL}.{base}".lower()


def check_names(names: list[str], zone: str) -> None:
    """Every name must be the zone or below it; a clear error otherwise."""
    zone = zone.lower().rstrip(".")
    for name in names:
        base = name.lower().rstrip(".")
        base = base.removeprefix("*.")
        if base != zone and not base.endswith("." + zone):
            raise InvalidSpec(
                f"certificate name {name!r} is outside the zone {zone}: the issuer can only "
                f"answer DNS-01 challenges in {zone}; use names under {zone} or add another "
                "certificate set for the other zone"
            )


@dataclass
class TxtChallenges:
    """Create and remove this cluster's challenge TXT records in one zone."""

    zone: str
    cluster: str
    api_token: str = field(repr=False)
    api_base_url: str | None = None
    timeout: float = 30.0
    _rec: Reconciler | None = field(default=None, init=False, repr=False)
    _zone_id: str | None = field(default=None, init=False)

    @property
    def comment(self) -> str:
        return owner_comment(self.cluster, OWNER_NODE)

    @property
    def calls(self) -> dict[str, int]:
        return dict(self._reconciler().calls)

    def _reconciler(self) -> Reconciler:
        if self._rec is None:
            self._rec = Reconciler(make_client(self.api_token, self.api_base_url,
                                               timeout=self.timeout))
        return self._rec

    def zone_id(self) -> str:
        if self._zone_id is None:
            self._zone_id = self._reconciler().find_zone(self.zone)
        return self._zone_id

    def owned(self) -> list[dict]:
        """This cluster's challenge records (exact comment, TXT, ``_acme-challenge.`` name)."""
        rec = self._reconciler()
        zid = self.zone_id()
        out, page_no = [], 1
        while True:
            rec.calls["reads"] += 1
            page = rec._call(
                lambda p=page_no: rec.client.dns.records.list(
                    zone_id=zid, comment={"exact": self.comment}, type="TXT", per_page=500,
                    page=p),
                f"listing challenge records of zone {self.zone}", zone=self.zone)
            items = page.result or []
            for item in items:
                name = str(item.name).lower()
                if (item.type == "TXT" and (item.comment or "") == self.comment
                        and name.split(".", 1)[0] == CHALLENGE_LABEL):
                    out.append({"id": item.id, "name": name, "content": item.content})
            info = page.result_info
            total = getattr(info, "total_pages", None) if info is not None else None
            if total is None or page_no >= int(total):
                break
            page_no += 1
        return out

    def present(self, values: list[tuple[str, str]]) -> None:
        """Create one TXT record per (name, value), in one atomic batch."""
        if not values:
            return
        rec = self._reconciler()
        zid = self.zone_id()
        posts = [{"type": "TXT", "name": name, "content": f'"{value}"', "ttl": TXT_TTL,
                  "comment": self.comment} for name, value in values]
        rec.calls["writes"] += 1
        rec._call(lambda: rec.client.dns.records.batch(zone_id=zid, posts=posts),
                  f"creating {len(posts)} DNS-01 challenge records in zone {self.zone}",
                  zone=self.zone, batch=True)

    def cleanup(self) -> int:
        """Delete every challenge record this cluster owns in the zone (one batch)."""
        stale = self.owned()
        if not stale:
            return 0
        rec = self._reconciler()
        zid = self.zone_id()
        rec.calls["writes"] += 1
        deletes = [{"id": r["id"]} for r in stale]
        rec._call(lambda: rec.client.dns.records.batch(zone_id=zid, deletes=deletes),
                  f"removing {len(stale)} DNS-01 challenge records from zone {self.zone}",
                  zone=self.zone, batch=True)
        return len(stale)


__all__ = ["DNSError", "TxtChallenges", "challenge_name", "check_names"]
