"""Which of kefu-inquiry's personal fields are sealed at rest: the contact's phone and e-mail.

The mechanism (AES-GCM per field, key ids and rotation, sealing in the store mapping so the
domain and the use cases see plain values) is the kernel's ``kefu_shared.crypto``
(``SealedStore``); this is only the table. Without data keys (``KEFU_DATA_KEYS`` unset) values
pass through; values written before encryption was switched on still read.
"""

from __future__ import annotations

from kefu_shared.crypto import FieldCipher, SealedFields

SEALED_PATHS = ("contact.phone", "contact.email")
# What each value is bound to (``inquiry.contact.phone``): the name inquiries sealed before the
# kernel's SealedStore existed used, so they still open.
SCOPE = "inquiry"


def sealed_fields(cipher: FieldCipher) -> SealedFields:
    return SealedFields(cipher, SEALED_PATHS, scope=SCOPE)
