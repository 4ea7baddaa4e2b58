"""URLs of the site's pages (namespace `web`) and of its API (namespace `web-api`, mounted under /api/)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from web import api, views

PETITION_ID = "<str:petition_id>"

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password-reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(
        template_name="registration/password_reset_sent.html"), name="password-reset-sent"),
    path("password-reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(
        template_name="registration/password_reset_confirm.html", success_url=reverse_lazy("web:password-reset-done")),
        name="password-reset-confirm"),
    path("password-reset/done/", auth_views.PasswordResetCompleteView.as_view(
        template_name="registration/password_reset_done.html"), name="password-reset-done"),
    path("account/", views.account, name="account"),
    path("account/balances/", views.account_balances, name="account-balances"),
    path("account/faucet/", views.faucet, name="faucet"),
    path("account/wallet.json", views.wallet_download, name="wallet-download"),
    path("account/link/", views.link_address, name="link-address"),
    path("petitions/new/", views.petition_new, name="petition-new"),
    path("petitions/wallet/", views.petition_wallet, name="petition-wallet"),
    path(f"petitions/{PETITION_ID}/", views.petition_detail, name="petition"),
    path(f"petitions/{PETITION_ID}/status/", views.petition_status, name="petition-status"),
    path(f"petitions/{PETITION_ID}/decision/", views.petition_decision, name="decision"),
    path("grants/", views.grants, name="grants"),
    path("supply/", views.supply, name="supply"),
    path("balances/", views.balances, name="balances"),
    path("audit/", views.audit, name="audit"),
    path(f"audit/petitions/{PETITION_ID}/", views.audit_petition, name="audit-petition"),
    path("audit/verify/", views.audit_verify, name="audit-verify"),
    path("audit/verify/runs/", views.audit_runs, name="audit-runs"),
]

api_urlpatterns = [
    path("petitions/", api.PetitionsView.as_view(), name="petitions"),
    path("petitions/signed/", api.SignedPetitionView.as_view(), name="petition-signed"),
    path(f"petitions/{PETITION_ID}/", api.PetitionView.as_view(), name="petition"),
    path("grants/", api.GrantsView.as_view(), name="grants"),
    path("balances/<str:address>/", api.BalancesView.as_view(), name="balances"),
    path("supply/", api.SupplyView.as_view(), name="supply"),
    path("faucet/", api.FaucetView.as_view(), name="faucet"),
]
