"""Forms of the team, invite, sign-up and token pages; the services check what the forms cannot."""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import AbstractBaseUser

from webapp.accounts.models import Role, Team
from webapp.accounts.selectors import teams_of
from webapp.accounts.services import INVITE_DAYS, MAX_INVITE_DAYS, MAX_TOKEN_DAYS
from webapp.input_errors import FormInputErrors


class TeamForm(FormInputErrors, forms.Form):
    name = forms.CharField(max_length=100)


class InviteForm(FormInputErrors, forms.Form):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    expires_in_days = forms.IntegerField(min_value=1, max_value=MAX_INVITE_DAYS, initial=INVITE_DAYS)


class RoleForm(FormInputErrors, forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class MoveProjectForm(FormInputErrors, forms.Form):
    team = forms.ModelChoiceField(queryset=None, empty_label=None)

    def __init__(self, *args, user: AbstractBaseUser, current: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_of(user, min_role=Role.ADMIN).exclude(pk=current.pk)


class SignUpForm(FormInputErrors, forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    password_again = forms.CharField(widget=forms.PasswordInput, strip=False, label="Password again")

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password_again") != data["password"]:
            self.add_error("password_again", "does not match the password")
        return data


class TokenForm(FormInputErrors, forms.Form):
    name = forms.CharField(max_length=100)
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_TOKEN_DAYS, help_text="Leave empty for no expiry."
    )
    read_only = forms.BooleanField(required=False, help_text="Reads only: any write answers 403.")
