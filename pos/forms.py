"""The log-in forms of the site and the admin, throttled per username and address (settings
LOGIN_MAX_FAILURES, LOGIN_LOCKOUT_MINUTES): counted in Django's cache, shared by every process."""

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from .services import clear_login_failures, client_ip, login_refusal, note_login_failure


class ThrottledLoginMixin:
    throttled = False

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        # Without the trusted proxy's hop the address is unknown: such attempts share one count.
        ip = client_ip(self.request.META.get("REMOTE_ADDR", ""),
                       self.request.META.get("HTTP_X_FORWARDED_FOR", "")) or "unknown"
        if not username:
            return super().clean()
        # Checked before the password: a right guess after the limit must not be told apart.
        refusal = login_refusal(username=username, ip=ip)
        if refusal:
            self.throttled = True
            raise ValidationError(refusal, code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError:
            note_login_failure(username=username, ip=ip)
            raise
        clear_login_failures(username=username, ip=ip)
        return cleaned


class ThrottledLoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
