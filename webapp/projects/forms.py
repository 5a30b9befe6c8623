from __future__ import annotations

from django import forms
from django.contrib.auth.models import AbstractBaseUser

from webapp.accounts.models import Role
from webapp.accounts.selectors import teams_of
from webapp.input_errors import FormInputErrors


class ProjectForm(FormInputErrors, forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    team = forms.ModelChoiceField(queryset=None, required=False, empty_label=None)

    def __init__(self, *args, user: AbstractBaseUser, **kwargs):
        super().__init__(*args, **kwargs)
        teams = teams_of(user, min_role=Role.MEMBER)
        self.fields["team"].queryset = teams
        if not teams.exists():
            # The service creates a personal team; there is nothing to choose.
            del self.fields["team"]
