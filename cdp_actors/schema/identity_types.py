"""Identity types: one canonical name per type (the Events API spelling), and the other APIs' spellings.

Events API batches name user identities in `user_identities` (`customer_id`, `email`, ...) and device
identities in `device_info` (`ios_advertising_id`, ...); IDSync names them differently (`customerid`,
`ios_idfa`, `other2`, ...) and the Profile API differently again. Everything inside the runtime uses
the canonical names below. This is the one table of identity types: the batch schema (`events.py`), the
identity index and the profiles all read it.
"""

from __future__ import annotations

USER_TYPES = (
    "customer_id",
    "mobile_number",
    "email",
    "other",
    "facebook",
    "google",
    "twitter",
    "microsoft",
    "yahoo",
    *(f"other_id_{n}" for n in range(2, 11)),
    "phone_number_2",
    "phone_number_3",
    "alias",
    "facebook_custom_audience_id",
)
DEVICE_TYPES = (
    "ios_advertising_id",
    "ios_idfv",
    "android_advertising_id",
    "android_uuid",
    "roku_advertising_id",
    "roku_publisher_id",
    "microsoft_publisher_id",
    "microsoft_advertising_id",
    "device_application_stamp",
    "fire_advertising_id",
    "amp_id",
    "push_token",
)
ALL_TYPES = USER_TYPES + DEVICE_TYPES

DEFAULT_PRIORITY = (
    "customer_id",
    "mobile_number",
    "email",
    "other",
    "facebook",
    "google",
    "twitter",
    "microsoft",
    "yahoo",
    "ios_advertising_id",
    "ios_idfv",
    "android_advertising_id",
    "android_uuid",
    "roku_advertising_id",
    "roku_publisher_id",
    "microsoft_publisher_id",
    "microsoft_advertising_id",
    "device_application_stamp",
)
"""The documented default identity hierarchy; types it does not name rank after it, in `ALL_TYPES` order."""

IDSYNC_TO_CANONICAL = {
    "customerid": "customer_id",
    "facebookcustomaudienceid": "facebook_custom_audience_id",
    "ios_idfa": "ios_advertising_id",
    "android_aaid": "android_advertising_id",
    "roku_aid": "roku_advertising_id",
    "fire_aid": "fire_advertising_id",
    "microsoft_aid": "microsoft_advertising_id",
    **{f"other{n}": f"other_id_{n}" for n in range(2, 11)},
    **{
        name: name
        for name in (
            "email",
            "facebook",
            "google",
            "microsoft",
            "other",
            "twitter",
            "yahoo",
            "mobile_number",
            "phone_number_2",
            "phone_number_3",
            "alias",
            "ios_idfv",
            "android_uuid",
            "amp_id",
            "push_token",
            "roku_publisher_id",
            "microsoft_publisher_id",
            "device_application_stamp",
        )
    },
}
CANONICAL_TO_IDSYNC = {canonical: idsync for idsync, canonical in IDSYNC_TO_CANONICAL.items()}
USER_SPELLINGS = {
    spelling: name for spelling, name in IDSYNC_TO_CANONICAL.items() if spelling != name and name in USER_TYPES
}
"""IDSync's spellings of user identities that a batch's `user_identities` may use too (the Python SDK sends
`customerid`): `customerid`, `facebookcustomaudienceid`, `other2` … `other10`."""

PROFILE_API_DEVICE_NAMES = {
    # The Profile API's sample shows `android_id` and `google_advertising_id`; the rest keep our names.
    "android_uuid": "android_id",
    "android_advertising_id": "google_advertising_id",
}
PROFILE_API_TO_CANONICAL = {"customerid": "customer_id", **{v: k for k, v in PROFILE_API_DEVICE_NAMES.items()}}


def canonical(name: str) -> str | None:
    """The canonical type for an Events API, IDSync or Profile API spelling; None if unknown."""
    if name in ALL_TYPES:
        return name
    return IDSYNC_TO_CANONICAL.get(name) or PROFILE_API_TO_CANONICAL.get(name)


def is_device_type(identity_type: str) -> bool:
    return identity_type in DEVICE_TYPES


def profile_api_name(identity_type: str) -> str:
    return PROFILE_API_DEVICE_NAMES.get(identity_type, identity_type)
