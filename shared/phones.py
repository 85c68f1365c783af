"""Phone numbers as the services keep them: E.164 (``+``, the country calling code and the
subscriber number, at most 15 digits). Pure.

For mainland China (``+86``) only mobile numbers can receive SMS: 11 digits starting
``1[3-9]``.
"""

import re
from typing import Final

from shared.events.orders import E164_PATTERN

E164: Final = re.compile(E164_PATTERN)
CN_MOBILE: Final = re.compile(r"^\+861[3-9][0-9]{9}$")
