"""The M-Pesa configuration read from settings, the URLs built from it, and what is wrong with it.

`configuration_problems` is shared by the system check and `manage.py mpesa_check`, so both say the
same thing in the same words.
"""

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.urls import NoReverseMatch, reverse

SANDBOX_URL = "https://sandbox.safaricom.co.ke"
PRODUCTION_URL = "https://api.safaricom.co.ke"
SANDBOX_SHORTCODE = "174379"
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
SIMULATOR_PATH = "/daraja-sim"

PAYBILL, TILL = "paybill", "till"
PAYBILL_ONLINE, BUY_GOODS_ONLINE = "CustomerPayBillOnline", "CustomerBuyGoodsOnline"

# Safaricom refuses callback URLs containing these words, in any case (Register URL docs).
BANNED_URL_WORDS = ("m-pesa", "mpesa", "safaricom", "exec", "exe", "cmd", "sql", "query")
# Public request catchers that Safaricom "usually blocks", especially in production.
BLOCKED_URL_HOSTS = ("ngrok", "mockbin", "requestbin")
CALLBACK_URL_NAMES = ("stk-callback", "c2b-validation", "c2b-confirmation")


@dataclass(frozen=True)
class MpesaConfig:
    environment: str
    consumer_key: str
    consumer_secret: str
    shortcode: str
    passkey: str
    shortcode_type: str
    till_number: str
    base_url: str
    base_url_overridden: bool
    callback_base_url: str
    connect_timeout: float
    read_timeout: float
    c2b_version: str
    c2b_response_type: str
    initiator_name: str
    security_credential: str

    @property
    def is_till(self) -> bool:
        return self.shortcode_type == TILL

    @property
    def party_b(self) -> str:
        """The number the customer pays: the till for Buy Goods, else the paybill itself."""
        return self.till_number if self.is_till else self.shortcode

    @property
    def transaction_type(self) -> str:
        return BUY_GOODS_ONLINE if self.is_till else PAYBILL_ONLINE


def mpesa_config() -> MpesaConfig:
    """Read on every call: cheap, and tests that change settings see the change at once."""
    environment = settings.MPESA_ENVIRONMENT
    callback_base = settings.MPESA_CALLBACK_BASE_URL.strip().rstrip("/")
    implied = {
        "simulator": callback_base + SIMULATOR_PATH,
        "sandbox": SANDBOX_URL,
        "production": PRODUCTION_URL,
    }[environment]
    override = settings.MPESA_BASE_URL.strip().rstrip("/")
    return MpesaConfig(
        environment=environment,
        consumer_key=settings.MPESA_CONSUMER_KEY.strip(),
        consumer_secret=settings.MPESA_CONSUMER_SECRET.strip(),
        shortcode=str(settings.MPESA_SHORTCODE).strip(),
        passkey=settings.MPESA_PASSKEY.strip(),
        shortcode_type=settings.MPESA_SHORTCODE_TYPE.strip().lower(),
        till_number=str(settings.MPESA_TILL_NUMBER).strip(),
        base_url=override or implied,
        base_url_overridden=bool(override),
        callback_base_url=callback_base,
        connect_timeout=float(settings.MPESA_CONNECT_TIMEOUT),
        read_timeout=float(settings.MPESA_READ_TIMEOUT),
        c2b_version=settings.MPESA_C2B_VERSION.strip().lower(),
        c2b_response_type=settings.MPESA_C2B_RESPONSE_TYPE.strip(),
        initiator_name=settings.MPESA_INITIATOR_NAME.strip(),
        security_credential=settings.MPESA_SECURITY_CREDENTIAL.strip(),
    )


def callback_url(name: str, **kwargs) -> str:
    """The absolute URL Safaricom calls back, e.g. callback_url("stk-callback")."""
    base = settings.MPESA_CALLBACK_BASE_URL.strip().rstrip("/")
    return base + reverse(f"mpesa:{name}", kwargs=kwargs or None)


def callback_url_problems(url: str, environment: str) -> list[str]:
    """Why Safaricom would refuse this callback URL in this environment (empty: it would not)."""
    problems = []
    if any(ch.isspace() for ch in url):
        problems.append(f"{url!r} contains a space; Daraja answers 'Invalid CallBackURL'.")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return problems + [f"{url!r} is not an absolute http(s):// address."]
    if environment == "simulator":
        return problems
    if environment == "production" and parts.scheme != "https":
        problems.append(f"{url} uses http: production Daraja calls back only https:// addresses.")
    host = parts.hostname.lower()
    if _is_private_host(host):
        problems.append(
            f"{url} points at {host}, which Safaricom cannot reach: use the shop server's public "
            "https address (MPESA_CALLBACK_BASE_URL)."
        )
    if any(blocked in host for blocked in BLOCKED_URL_HOSTS):
        problems.append(f"{url} uses {host}: Safaricom usually blocks public tunnels and request catchers.")
    words = banned_url_words(url)
    if words:
        problems.append(_banned_words_message(url, words))
    return problems


def banned_url_words(text: str) -> list[str]:
    lowered = text.lower()
    words = [word for word in BANNED_URL_WORDS if word in lowered]
    # "exe" is inside "exec" and "mpesa" inside "m-pesa": name only the longest match.
    return [w for w in words if not any(w != other and w in other for other in words)]


def _banned_words_message(url: str, words: list[str]) -> str:
    return (
        f"{url} contains {', '.join(repr(w) for w in words)}: Safaricom refuses callback URLs with "
        "the words M-Pesa, Safaricom, exe, exec, cmd, SQL or query. Set MPESA_CALLBACK_PREFIX to a "
        "neutral word such as 'hooks'."
    )


def _is_private_host(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".lan")):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global


@dataclass(frozen=True)
class ConfigProblem:
    id: str  # a system check id, e.g. "mpesa.E001"
    message: str
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return ".E" in self.id


def configuration_problems(config: MpesaConfig | None = None) -> list[ConfigProblem]:
    """Everything wrong with the M-Pesa settings, in words an operator can act on."""
    config = config or mpesa_config()
    env = config.environment
    problems = []
    live = env in ("sandbox", "production")

    if live:
        missing = [
            name for name, value, placeholder in (
                ("MPESA_CONSUMER_KEY", config.consumer_key, "simulator-key"),
                ("MPESA_CONSUMER_SECRET", config.consumer_secret, "simulator-secret"),
                ("MPESA_SHORTCODE", config.shortcode, None),
                ("MPESA_PASSKEY", config.passkey, None),
            ) if not value or value == placeholder
        ]
        if missing:
            problems.append(ConfigProblem(
                "mpesa.E001",
                f"MPESA_ENVIRONMENT={env} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set.",
                "Copy the consumer key and secret of your app on developer.safaricom.co.ke, and the "
                "shortcode and passkey Safaricom sent you, into the environment or .env.",
            ))

    if config.shortcode and not config.shortcode.isdigit():
        problems.append(ConfigProblem(
            "mpesa.E002", f"MPESA_SHORTCODE={config.shortcode!r} is not a number.",
            "Use the paybill number, or for a till the store (head office) number.",
        ))
    if config.shortcode_type not in (PAYBILL, TILL):
        problems.append(ConfigProblem(
            "mpesa.E003", f"MPESA_SHORTCODE_TYPE={config.shortcode_type!r}: use 'paybill' or 'till'.",
        ))
    elif config.is_till and not config.till_number:
        problems.append(ConfigProblem(
            "mpesa.E004", "MPESA_SHORTCODE_TYPE=till but MPESA_TILL_NUMBER is not set.",
            "For a till (Buy Goods), MPESA_SHORTCODE is the store/head-office number and "
            "MPESA_TILL_NUMBER the till number customers pay (Daraja's PartyB).",
        ))
    elif config.is_till and config.till_number == config.shortcode:
        problems.append(ConfigProblem(
            "mpesa.W005", f"MPESA_TILL_NUMBER and MPESA_SHORTCODE are both {config.shortcode}.",
            "For a till, MPESA_SHORTCODE must be the store (head office) number the till belongs to, not "
            "the till; pushes with the till as BusinessShortCode fail with 'Merchant does not exist'.",
        ))
    elif not config.is_till and config.till_number:
        problems.append(ConfigProblem(
            "mpesa.E006",
            f"MPESA_TILL_NUMBER={config.till_number} is set but MPESA_SHORTCODE_TYPE=paybill.",
            "A till is paid with CustomerBuyGoodsOnline: set MPESA_SHORTCODE_TYPE=till (and MPESA_SHORTCODE "
            "to its store number), or remove MPESA_TILL_NUMBER. Mixing them gives 'The operator does "
            "not exist' (SFC_IC0003) or ResultCode 2028.",
        ))

    if env == "production":
        sandbox_values = []
        if config.shortcode == SANDBOX_SHORTCODE:
            sandbox_values.append(f"MPESA_SHORTCODE={SANDBOX_SHORTCODE} (the sandbox test paybill)")
        if config.passkey == SANDBOX_PASSKEY:
            sandbox_values.append("MPESA_PASSKEY (the public sandbox passkey)")
        if config.base_url_overridden and "sandbox" in config.base_url:
            sandbox_values.append(f"MPESA_BASE_URL={config.base_url}")
        if sandbox_values:
            problems.append(ConfigProblem(
                "mpesa.E007", "MPESA_ENVIRONMENT=production uses sandbox values: " + "; ".join(sandbox_values) + ".",
                "Production needs the production shortcode, passkey and app keys Safaricom emailed at go-live.",
            ))
    if env == "sandbox" and config.base_url_overridden and config.base_url.startswith(PRODUCTION_URL):
        problems.append(ConfigProblem(
            "mpesa.E008", f"MPESA_ENVIRONMENT=sandbox but MPESA_BASE_URL={config.base_url} is production Daraja.",
            "Sandbox keys do not work on production and production keys do not work on the sandbox.",
        ))

    if config.c2b_version not in ("v1", "v2"):
        problems.append(ConfigProblem("mpesa.E009", f"MPESA_C2B_VERSION={config.c2b_version!r}: use 'v1' or 'v2'."))
    if config.c2b_response_type not in ("Completed", "Cancelled"):
        problems.append(ConfigProblem(
            "mpesa.E010",
            f"MPESA_C2B_RESPONSE_TYPE={config.c2b_response_type!r}: Daraja takes exactly 'Completed' or 'Cancelled'.",
        ))
    if config.connect_timeout <= 0 or config.read_timeout <= 0:
        problems.append(ConfigProblem(
            "mpesa.E011", "MPESA_CONNECT_TIMEOUT and MPESA_READ_TIMEOUT must be above 0 seconds."
        ))

    # The sandbox tolerates more than production does (http, some words), so there it warns.
    url_id = "mpesa.E012" if env == "production" else "mpesa.W012"
    messages = callback_url_problems(config.callback_base_url + "/", env)
    if env != "simulator":
        for url in _callback_urls():
            path_words = banned_url_words(urlsplit(url).path)
            if path_words:
                messages.append(_banned_words_message(url, path_words))
    problems.extend(ConfigProblem(url_id, message) for message in messages)
    return problems


def _callback_urls() -> list[str]:
    urls = []
    for name in CALLBACK_URL_NAMES:
        try:
            urls.append(callback_url(name))
        except NoReverseMatch:
            # Not routed yet, or routed with a per-request token: the base URL is still checked.
            continue
    return urls


def account_problems(account) -> list[str]:
    """What is wrong with one shop's `MpesaAccount` (till vs paybill), in words."""
    where = f"{account.shop.code}'s M-Pesa account"
    problems = []
    if not str(account.shortcode).isdigit():
        problems.append(f"{where}: shortcode {account.shortcode!r} is not a number.")
    if account.kind == TILL:
        if not account.till_number:
            problems.append(
                f"{where} is a till but has no till number: the till is what customers pay (PartyB); "
                "the shortcode is its store (head office) number."
            )
        elif account.till_number == account.shortcode:
            problems.append(
                f"{where}: till number and shortcode are both {account.shortcode}; the shortcode must be "
                "the store (head office) number the till belongs to, not the till."
            )
    elif account.till_number:
        problems.append(
            f"{where} is a paybill but has a till number ({account.till_number}): a till is paid with "
            "Buy Goods; set the kind to till, or clear the till number."
        )
    return problems
