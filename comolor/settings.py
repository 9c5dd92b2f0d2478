"""Comolor POS settings: one module, driven by environment variables.

Every value can come from the environment or from a `.env` file beside manage.py
(see `.env.example`). The defaults run the embedded development shape: SQLite,
the built-in Daraja simulator and a file printer.
"""

import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# pytest imports itself before it loads settings; the test suite runs the simulator with DEBUG off.
TESTING = "pytest" in sys.modules

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="django-insecure-development-key-do-not-use-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The public origin of this installation: receipt QR codes and M-Pesa callbacks point here.
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "inventory",
    "pos",
    "mpesa",
    "receipts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "comolor.urls"
WSGI_APPLICATION = "comolor.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
        "DATABASE_PREPARED_STATEMENTS", default=True):
    # Parameters bound by the server, and a statement a connection has run 5 times prepared: an M-Pesa
    # callback's dozen statements then cost PostgreSQL about 40% less CPU and Python 15% less
    # (bench/bench_callbacks.py). Turn it off behind a pooler that cannot keep prepared statements
    # (PgBouncer in transaction mode before 1.21).
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The dev server, the worker and the simulator's callback thread write at once:
    # take the write lock up front and wait for it instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: holds the Daraja OAuth token and rate limits, shared by every process -------------
CACHES = {"default": env.cache("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}")}

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = ["pos.backends.StaffBackend"]
# Sessions are read from the cache and written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "pos:home"
LOGOUT_REDIRECT_URL = "login"

# --- Locale: a Kenyan shop -------------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Africa/Nairobi"
USE_I18N = True
USE_TZ = True

# --- Static files, served by whitenoise -------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or TESTING
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security: secure by default, relaxed only with DEBUG ----------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG and not TESTING)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG and not TESTING)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG and not TESTING)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Preloading binds the whole domain and its subdomains to HTTPS in browsers for months and is hard
# to undo, so the domain's owner opts in with SECURE_HSTS_PRELOAD=True; check --deploy stays quiet.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=12 * 3600)  # one trading day
# A request body larger than this is refused before anyone parses it (callbacks are ~1 KB).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
}

# --- Logging: phone numbers and secrets are redacted by the filter on every handler -----------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "comolor.logging.RedactFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler would print each django.* line a second time beside root's.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "INFO"},
    },
}

# --- Point of sale ---------------------------------------------------------------------------
# Dotted paths of functions called with a sale id after a completed sale commits (receipts).
POS_SALE_COMPLETED_HOOKS = env.list(
    "POS_SALE_COMPLETED_HOOKS", default=["receipts.services.print_sale_receipt"]
)
# Payment methods other than cash, each started by a function of the app that owns it.
POS_PAYMENT_STARTERS = {"mpesa": "mpesa.services.start_stk_payment"}
# Checked before a sale is created for that method (shop, phone, amount); a SaleError writes nothing.
POS_PAYMENT_CHECKS = {"mpesa": "mpesa.services.check_stk_payment"}
# The X/Z shift report's lines for methods other than cash, each from the app that takes the method:
# called with the shift and the end of its period, each returns one method's row (pos.services.shift_report).
POS_SHIFT_REPORT_SECTIONS = ["mpesa.services.shift_mpesa_section"]
# Dotted paths of functions `manage.py pos_worker` calls each round; each returns a short summary.
POS_WORKER_TASKS = env.list(
    "POS_WORKER_TASKS", default=[
        "receipts.services.retry_failed_print_jobs", "mpesa.services.sweep_mpesa", "mpesa.services.sweep_pull",
    ]
)
POS_WORKER_INTERVAL = env.float("POS_WORKER_INTERVAL", default=5.0)
# Minutes after which a pending sale counts as abandoned: listed for managers, who may cancel it.
POS_STALE_SALE_MINUTES = env.int("POS_STALE_SALE_MINUTES", default=30)
# Failed logins allowed per username and address before the login is refused for the lockout time.
LOGIN_MAX_FAILURES = env.int("LOGIN_MAX_FAILURES", default=5)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)

# --- Receipts and printers -------------------------------------------------------------------
# Where a till with no printer configured prints: an address as `manage.py print_test` takes it
# (tcp://host:9100, usb://04b8:0e15, serial:///dev/ttyUSB0, file:///path, lp://queue, browser).
# A relative file:// path is under the project folder; a folder gets one .bin file per receipt.
RECEIPTS_DEFAULT_PRINTER = env("RECEIPTS_DEFAULT_PRINTER", default="file://var/receipts")
RECEIPTS_DEFAULT_PAPER_WIDTH = env.int("RECEIPTS_DEFAULT_PAPER_WIDTH", default=80)
RECEIPTS_DEFAULT_PROFILE = env("RECEIPTS_DEFAULT_PROFILE", default="default")
# Short, so a dead printer never holds up a cashier: seconds to connect, and to hand over a job.
RECEIPTS_CONNECT_TIMEOUT = env.float("RECEIPTS_CONNECT_TIMEOUT", default=3.0)
RECEIPTS_WRITE_TIMEOUT = env.float("RECEIPTS_WRITE_TIMEOUT", default=5.0)
# The receipt of a completed sale is sent from a background thread, so neither the cashier's request
# nor Safaricom's callback waits for a printer. Tests send in line, inside their own transaction.
RECEIPTS_PRINT_IN_BACKGROUND = env.bool("RECEIPTS_PRINT_IN_BACKGROUND", default=not TESTING)
# After sending, wait (within the write timeout) for a network printer to close the connection, as
# CUPS does: that is how one that accepts but never reads (paper out) is caught. Turn off only for a
# printer that keeps connections open, or every receipt to it would be reported failed.
RECEIPTS_NETWORK_WAIT_FOR_CLOSE = env.bool("RECEIPTS_NETWORK_WAIT_FOR_CLOSE", default=True)
# The worker retries a failed job this many times in all, waiting BACKOFF × 2^(tries − 1) seconds.
RECEIPTS_PRINT_MAX_ATTEMPTS = env.int("RECEIPTS_PRINT_MAX_ATTEMPTS", default=5)
RECEIPTS_RETRY_BACKOFF = env.float("RECEIPTS_RETRY_BACKOFF", default=10.0)
# The public origin the receipt QR code points at (its verification page).
RECEIPTS_VERIFY_BASE_URL = env("RECEIPTS_VERIFY_BASE_URL", default=SITE_URL)

# --- M-Pesa (Daraja) -------------------------------------------------------------------------
MPESA_ENVIRONMENT = env("MPESA_ENVIRONMENT", default="simulator")
if MPESA_ENVIRONMENT not in ("simulator", "sandbox", "production"):
    raise ImproperlyConfigured(
        f"MPESA_ENVIRONMENT={MPESA_ENVIRONMENT!r}: use 'simulator', 'sandbox' or 'production'."
    )
if MPESA_ENVIRONMENT == "simulator" and not (DEBUG or TESTING):
    raise ImproperlyConfigured(
        "The Daraja simulator runs only with DEBUG=True. In production set "
        "MPESA_ENVIRONMENT=sandbox or production and the MPESA_* credentials."
    )
_SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
_simulated = MPESA_ENVIRONMENT != "production"
MPESA_CONSUMER_KEY = env("MPESA_CONSUMER_KEY", default="simulator-key" if _simulated else "")
MPESA_CONSUMER_SECRET = env("MPESA_CONSUMER_SECRET", default="simulator-secret" if _simulated else "")
MPESA_SHORTCODE = env("MPESA_SHORTCODE", default="174379" if _simulated else "")
MPESA_PASSKEY = env("MPESA_PASSKEY", default=_SANDBOX_PASSKEY if _simulated else "")
MPESA_BASE_URL = env("MPESA_BASE_URL", default="")
MPESA_CALLBACK_BASE_URL = env("MPESA_CALLBACK_BASE_URL", default=SITE_URL)
# Callback paths. Safaricom refuses URLs with "mpesa" or "safaricom" in production: set a neutral
# prefix there and a long random token; the token-less paths are then not served at all.
MPESA_CALLBACK_PREFIX = env("MPESA_CALLBACK_PREFIX", default="mpesa")
MPESA_CALLBACK_TOKEN = env("MPESA_CALLBACK_TOKEN", default="")
# Addresses (or CIDR networks) callbacks may come from: Safaricom's published list (docs/daraja.md §12).
# The simulator posts from loopback, which is allowed only when MPESA_ENVIRONMENT=simulator.
MPESA_CALLBACK_ALLOWED_IPS = env.list("MPESA_CALLBACK_ALLOWED_IPS", default=[
    "196.201.214.200", "196.201.214.206", "196.201.213.114", "196.201.214.207",
    "196.201.214.208", "196.201.213.44", "196.201.212.127", "196.201.212.138",
    "196.201.212.129", "196.201.212.136", "196.201.212.74", "196.201.212.69",
])
# How many reverse proxies of ours sit in front of Django, each appending to X-Forwarded-For
# (0: Django faces the internet). The caller is read that many hops from the right, never the left.
MPESA_TRUSTED_PROXY_COUNT = env.int("MPESA_TRUSTED_PROXY_COUNT", default=0)
# A callback body larger than this is stored truncated and not processed (real ones are ~1 KB).
MPESA_CALLBACK_MAX_BYTES = env.int("MPESA_CALLBACK_MAX_BYTES", default=64 * 1024)
# Before a success callback completes a sale, ask Daraja (STK Query) whether it really is paid.
MPESA_STK_CONFIRM_BY_QUERY = env.bool("MPESA_STK_CONFIRM_BY_QUERY", default=False)
# Answer Safaricom as soon as a callback is stored, and apply it right after the answer is sent;
# False applies it first (Safaricom then waits for the sale to complete).
MPESA_CALLBACK_ANSWER_FIRST = env.bool("MPESA_CALLBACK_ANSWER_FIRST", default=True)
# Prompt spam: at most this many M-Pesa prompts a minute to one phone, and from one cashier, across
# tills and shops (counted in the cache); more are refused and logged.
MPESA_STK_PROMPTS_PER_PHONE = env.int("MPESA_STK_PROMPTS_PER_PHONE", default=3)
MPESA_STK_PROMPTS_PER_CASHIER = env.int("MPESA_STK_PROMPTS_PER_CASHIER", default=30)
# Seconds: the till stops waiting for the customer's PIN; the sweep queries a prompt this old and
# again this often; it gives up after Daraja's prompt lifetime with room for a late callback.
MPESA_STK_TIMEOUT = env.int("MPESA_STK_TIMEOUT", default=90)
MPESA_SWEEP_AFTER = env.int("MPESA_SWEEP_AFTER", default=30)
MPESA_SWEEP_REQUERY_EVERY = env.int("MPESA_SWEEP_REQUERY_EVERY", default=20)
MPESA_STK_GIVE_UP_AFTER = env.int("MPESA_STK_GIVE_UP_AFTER", default=300)
# The configured account: a paybill, or a till (Buy Goods) whose MPESA_SHORTCODE is the store number.
MPESA_SHORTCODE_TYPE = env("MPESA_SHORTCODE_TYPE", default="paybill")
MPESA_TILL_NUMBER = env("MPESA_TILL_NUMBER", default="")
# Seconds to wait for a TCP connection to Daraja, then for its answer.
MPESA_CONNECT_TIMEOUT = env.float("MPESA_CONNECT_TIMEOUT", default=5.0)
MPESA_READ_TIMEOUT = env.float("MPESA_READ_TIMEOUT", default=30.0)
# A connection to Daraja idle longer than this is not reused: below the keep-alive of the server
# at the other end, which may close it just as a push is sent on it.
MPESA_CONNECTION_IDLE_SECONDS = env.float("MPESA_CONNECTION_IDLE_SECONDS", default=4.0)
# C2B register/simulate version: must match the C2B product ticked on the Daraja app.
MPESA_C2B_VERSION = env("MPESA_C2B_VERSION", default="v2")
# What M-Pesa does with a C2B payment when our validation URL does not answer in time.
MPESA_C2B_RESPONSE_TYPE = env("MPESA_C2B_RESPONSE_TYPE", default="Completed")
# Seconds a cashier's claim of a till payment by M-Pesa code waits for Safaricom's confirmation;
# minutes of this shop's unclaimed payments the till lists to pick from.
MPESA_CLAIM_WAIT_SECONDS = env.int("MPESA_CLAIM_WAIT_SECONDS", default=90)
MPESA_UNCLAIMED_MINUTES = env.int("MPESA_UNCLAIMED_MINUTES", default=30)
# The worker's Pull Transactions for each account (recovers lost C2B confirmations): at most this
# often, over the time since the last pull plus an overlap (Daraja keeps 48 hours).
MPESA_PULL_EVERY_SECONDS = env.int("MPESA_PULL_EVERY_SECONDS", default=900)
# Transaction Status: an API operator and its password RSA-encrypted with Safaricom's certificate.
MPESA_INITIATOR_NAME = env("MPESA_INITIATOR_NAME", default="testapi" if _simulated else "")
MPESA_SECURITY_CREDENTIAL = env(
    "MPESA_SECURITY_CREDENTIAL", default="simulator-credential" if MPESA_ENVIRONMENT == "simulator" else ""
)

# --- Daraja simulator (MPESA_ENVIRONMENT=simulator only; mpesa/simulator/, /daraja-sim/) --------
if MPESA_ENVIRONMENT == "simulator":
    INSTALLED_APPS.append("mpesa.simulator")
# "thread": results go out on time from a background thread; "queued" (tests): they wait for
# mpesa.simulator.testing.deliver_callbacks_now().
DARAJA_SIM_DELIVERY = env("DARAJA_SIM_DELIVERY", default="queued" if TESTING else "thread")
DARAJA_SIM_CALLBACK_DELAY = env.float("DARAJA_SIM_CALLBACK_DELAY", default=2.0)  # push → result
DARAJA_SIM_PROMPT_TIMEOUT = env.float("DARAJA_SIM_PROMPT_TIMEOUT", default=60.0)  # unanswered → 1037
DARAJA_SIM_LATE_DELAY = env.float("DARAJA_SIM_LATE_DELAY", default=60.0)  # 254700009004's callback
DARAJA_SIM_VALIDATION_TIMEOUT = env.float("DARAJA_SIM_VALIDATION_TIMEOUT", default=8.0)
# Prompts to this number wait for a person on /daraja-sim/phone/ (unanswered: 1037).
DARAJA_SIM_MANUAL_PHONE = env("DARAJA_SIM_MANUAL_PHONE", default="254700000000")
# "sandbox": C2B URLs may be re-registered, http allowed. "production": one-time registration,
# https only, URLs with banned words refused, no C2B simulate API.
DARAJA_SIM_MODE = env("DARAJA_SIM_MODE", default="sandbox")
# Shortcodes besides MPESA_SHORTCODE: "600100" (a paybill) or "600200:5200200" (store:till).
DARAJA_SIM_EXTRA_SHORTCODES = env.list("DARAJA_SIM_EXTRA_SHORTCODES", default=[])
# Same amount from the same phone within this many seconds: ResultCode 17 (0: off).
DARAJA_SIM_SAME_AMOUNT_WINDOW = env.int("DARAJA_SIM_SAME_AMOUNT_WINDOW", default=120)
DARAJA_SIM_C2B_FOR_STK = env.bool("DARAJA_SIM_C2B_FOR_STK", default=False)  # STK also confirmed as C2B
DARAJA_SIM_SINGLE_TOKEN = env.bool("DARAJA_SIM_SINGLE_TOKEN", default=False)  # a new token revokes the old
DARAJA_SIM_MAX_TPS = env.int("DARAJA_SIM_MAX_TPS", default=0)  # spike arrest (500.003.02); 0: off
if DARAJA_SIM_DELIVERY not in ("thread", "queued") or DARAJA_SIM_MODE not in ("sandbox", "production"):
    raise ImproperlyConfigured(
        "DARAJA_SIM_DELIVERY takes 'thread' or 'queued'; DARAJA_SIM_MODE takes 'sandbox' or 'production'."
    )
