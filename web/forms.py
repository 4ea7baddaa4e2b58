"""Forms of the site's pages; the rules themselves live in services (one source for pages and API)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.core.validators import RegexValidator

from ao.permaweb.b64 import B64Error, b64url_decode
from web import services
from web.selectors import AUDIT_OUTCOMES
from web.errors import InvalidInput
from web.models import MAX_NAME_CHARS, MAX_PETITION_CHARS

ADDRESS_VALIDATOR = RegexValidator(r"^[A-Za-z0-9_-]{43}$", "An address is 43 characters of base64url.")
MAX_ITEM_UPLOAD_BYTES = 8 * 1024  # a link proof's data item holds only the short challenge text


class SignupForm(UserCreationForm):
    """Username, password and an optional email (for password resets); the account gets a custodial wallet."""

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")
        help_texts = {"email": "Optional: where a password-reset link is sent. Not shown to anyone."}


class PetitionForm(forms.Form):
    """A petition: its text and the name the Fed shows; the Fed's rules are checked by the service's validator."""

    text = forms.CharField(
        label="Your petition", required=False, strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "maxlength": MAX_PETITION_CHARS, "required": True}),
        help_text=f"1 to {MAX_PETITION_CHARS} characters. Say what you do and why it deserves LLAMA.",
    )
    sender_name = forms.CharField(
        label="Your name", required=False, strip=False,
        widget=forms.TextInput(attrs={"maxlength": MAX_NAME_CHARS, "required": True}),
        help_text=f"2 to {MAX_NAME_CHARS} characters, shown publicly.",
    )

    def clean(self) -> dict[str, Any]:
        """Every broken rule at once, worded as the service words it."""
        data = super().clean()
        try:
            data["text"], data["sender_name"] = services.petition_validate(
                text=data.get("text", ""), sender_name=data.get("sender_name", ""))
        except InvalidInput as exc:
            for name, error in exc.fields.items():
                self.add_error(name, error)
        return data


class LinkAddressForm(forms.Form):
    """Proof of control of an address: a signed data item whose data is the challenge, or a raw signature."""

    nonce = forms.CharField(widget=forms.HiddenInput)
    data_item_file = forms.FileField(label="Signed data item (file)", required=False)
    data_item = forms.CharField(
        label="…or the signed data item, base64url", required=False, widget=forms.Textarea(attrs={"rows": 3}),
    )
    owner = forms.CharField(
        label="…or your public key (the JWK's n, base64url)", required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    signature = forms.CharField(
        label="and the RSA-PSS signature of the challenge (base64url)", required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def clean(self) -> dict[str, Any]:
        """Exactly one proof: a data item (file or text), or owner and signature together."""
        data = super().clean()
        upload = data.get("data_item_file")
        raw: bytes | None = None
        if upload is not None:
            if upload.size > MAX_ITEM_UPLOAD_BYTES:
                raise forms.ValidationError(f"The data item file is over {MAX_ITEM_UPLOAD_BYTES} bytes.")
            raw = upload.read()
        elif data.get("data_item", "").strip():
            try:
                raw = b64url_decode(data["data_item"].strip())
            except B64Error as exc:
                raise forms.ValidationError(f"The data item is not base64url: {exc}") from exc
        if raw is None and not (data.get("owner", "").strip() and data.get("signature", "").strip()):
            raise forms.ValidationError("Give a signed data item, or your public key and a signature.")
        data["raw_item"] = raw
        return data


class AddressForm(forms.Form):
    """An address to look up."""

    address = forms.CharField(label="Address", validators=[ADDRESS_VALIDATOR], max_length=43, min_length=43)


class AuditFilterForm(forms.Form):
    """The audit list's filters (staff)."""

    outcome = forms.ChoiceField(label="Outcome", required=False,
                                choices=[("", "any")] + list(AUDIT_OUTCOMES.items()))
    q = forms.CharField(label="Petition id, address, name or words", required=False, max_length=200)
