"""Commerce event expansion, for outputs that take plain events (product docs, "Commerce Event Types and
Event Forwarding"): product and impression events → one event per product; purchase and refund → plus
one event with the totals; promotion events → one event per promotion. Names follow the mParticle SDKs'
expansion (`eCommerce - purchase - Item`, `eCommerce - purchase - Total`, ...).
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

TOTAL_ACTIONS = frozenset({"purchase", "refund"})
_PRODUCT_FIELDS = {
    "id": "Id",
    "name": "Name",
    "brand": "Brand",
    "category": "Category",
    "variant": "Variant",
    "position": "Position",
    "price": "Price",
    "quantity": "Quantity",
    "coupon_code": "Coupon Code",
    "total_product_amount": "Total Product Amount",
}
_TOTAL_FIELDS = {
    "transaction_id": "Transaction Id",
    "total_amount": "Total Amount",
    "tax_amount": "Tax Amount",
    "shipping_amount": "Shipping Amount",
    "affiliation": "Affiliation",
    "coupon_code": "Coupon Code",
    "checkout_step": "Checkout Step",
    "checkout_options": "Checkout Options",
}
_PROMOTION_FIELDS = {"id": "Id", "name": "Name", "creative": "Creative", "position": "Position"}


class Expanded(Struct):
    """One plain event out of a commerce event."""

    name: str
    kind: str  # "product", "total", "impression" or "promotion"
    action: str
    attributes: dict[str, Any]
    revenue: float | None = None
    product: dict[str, Any] | None = None


def _renamed(source: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {label: source[key] for key, label in names.items() if source.get(key) is not None}


def _product_attributes(product: dict[str, Any]) -> dict[str, Any]:
    return {**_renamed(product, _PRODUCT_FIELDS), **(product.get("custom_attributes") or {})}


def expand_commerce(data: dict[str, Any]) -> list[Expanded]:
    """The plain events a commerce event's `data` expands to; the event's own custom attributes go on each."""
    shared = dict(data.get("custom_attributes") or {})
    if data.get("currency_code"):
        shared["Currency Code"] = data["currency_code"]
    expanded: list[Expanded] = []
    action = data.get("product_action")
    if action:
        name = action["action"]
        for product in action.get("products") or []:
            expanded.append(
                Expanded(
                    f"eCommerce - {name} - Item",
                    "product",
                    name,
                    {**shared, **_product_attributes(product)},
                    product=product,
                )
            )
        if name in TOTAL_ACTIONS:
            count = len(action.get("products") or [])
            attributes = {**shared, **_renamed(action, _TOTAL_FIELDS), "Product Count": count}
            expanded.append(
                Expanded(f"eCommerce - {name} - Total", "total", name, attributes, revenue=action.get("total_amount"))
            )
    promotion = data.get("promotion_action")
    if promotion:
        name = promotion["action"]
        for item in promotion.get("promotions") or []:
            expanded.append(
                Expanded(
                    f"eCommerce - {name} - Item", "promotion", name, {**shared, **_renamed(item, _PROMOTION_FIELDS)}
                )
            )
    for impression in data.get("product_impressions") or []:
        listed = (
            {"Product Impression List": impression["product_impression_list"]}
            if impression.get("product_impression_list")
            else {}
        )
        for product in impression.get("products") or []:
            attributes = {**shared, **listed, **_product_attributes(product)}
            expanded.append(
                Expanded("eCommerce - Impression - Item", "impression", "impression", attributes, product=product)
            )
    return expanded
