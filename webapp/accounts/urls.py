from django.urls import path

from webapp.accounts import views

app_name = "accounts"

urlpatterns = [
    path("teams/", views.team_list, name="teams"),
    path("teams/<int:team_id>/", views.team_detail, name="team"),
    path("teams/<int:team_id>/rename/", views.team_rename, name="team_rename"),
    path("teams/<int:team_id>/delete/", views.team_delete, name="team_delete"),
    path("teams/<int:team_id>/invites/", views.invite_create, name="invite_create"),
    path("teams/<int:team_id>/invites/<int:invite_id>/revoke/", views.invite_revoke, name="invite_revoke"),
    path("teams/<int:team_id>/members/<int:user_id>/role/", views.member_role, name="member_role"),
    path("teams/<int:team_id>/members/<int:user_id>/remove/", views.member_remove, name="member_remove"),
    path("teams/<int:team_id>/leave/", views.team_leave, name="team_leave"),
    path("teams/<int:team_id>/projects/<int:project_id>/move/", views.project_move, name="project_move"),
    path("teams/<int:team_id>/audit/", views.team_audit, name="team_audit"),
    path("invites/<str:token>/", views.invite, name="invite"),
    path("signup/", views.signup, name="signup"),
    path("account/tokens/", views.tokens, name="tokens"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
]
