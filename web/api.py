"""The site's JSON API (DRF, described at /api/schema/): petitions (session or client-signed), decisions, grants,
balances, LLAMA supply, the faucet. Amounts are strings of integer base units."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, Throttled
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from ao import limits
from web import selectors, services
from web.errors import InvalidInput, WebError
from web.forms import ADDRESS_VALIDATOR
from web.models import MAX_NAME_CHARS, MAX_PETITION_CHARS, Grant, Petition, PetitionRequest, Vote

PAGE_SIZE = 20


# --- throttling ---------------------------------------------------------------------------------------------


class _SharedThrottle(BaseThrottle):
    """A limit of settings.LIMITS[limit] counted in the shared cache by every worker (ao.limits); over it, DRF's 429
    with Retry-After and a message saying when to come back."""

    limit = ""
    what = "requests"

    def ident(self, request: Request) -> str:
        """Whom the limit counts: the client's address."""
        return "ip:" + limits.client_ip(request)

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            limits.hit(self.limit, self.ident(request), limits.parse_rate(settings.LIMITS[self.limit]), what=self.what)
        except limits.Limited as exc:
            raise Throttled(wait=exc.retry_after, detail=_sentence(str(exc))) from exc
        return True


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


class PetitionThrottle(_SharedThrottle):
    """Petition submissions per account (per address for the anonymous signed API)."""

    limit = "petition_client"
    what = "petition submissions from this client"

    def ident(self, request: Request) -> str:
        user = getattr(request, "user", None)
        return f"user:{user.pk}" if user is not None and user.is_authenticated else super().ident(request)


class FaucetThrottle(_SharedThrottle):
    """Faucet requests per address (the per-account drips are the service's rule)."""

    limit = "faucet_ip"
    what = "faucet requests from this address"


class _WriteView(APIView):
    """Writes: limited per client; the services' own errors become JSON with their status and message."""

    def get_throttles(self) -> list[BaseThrottle]:
        return [] if self.request.method in ("GET", "HEAD", "OPTIONS") else super().get_throttles()

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, WebError):
            body: dict[str, Any] = {"detail": str(exc)}
            if isinstance(exc, InvalidInput) and exc.fields:
                body["errors"] = exc.fields
            response = Response(body, status=exc.status)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after:
                response["Retry-After"] = str(retry_after)
            return response
        return super().handle_exception(exc)


# --- serializers --------------------------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class AmountField(serializers.Field):
    """An integer amount in base units, as a decimal string (JSON numbers lose precision past 2**53)."""

    def to_representation(self, value: Decimal | int) -> str:
        return str(int(value))


class VoteSerializer(serializers.ModelSerializer):
    """A governor's vote."""

    class Meta:
        model = Vote
        fields = ("governor_index", "governor", "grade", "veto", "reason", "valid", "voted_at")


class GrantSerializer(serializers.ModelSerializer):
    """LLAMA granted for a petition."""

    petition = serializers.CharField(source="petition_id")
    amount = AmountField()

    class Meta:
        model = Grant
        fields = ("petition", "recipient", "amount", "status", "error", "decided_at", "confirmed_at")


class PetitionSerializer(serializers.ModelSerializer):
    """A petition as the log tells it."""

    offering = AmountField(allow_null=True)
    amount = AmountField(allow_null=True)
    votes = VoteSerializer(many=True, read_only=True)
    grant = serializers.SerializerMethodField()

    class Meta:
        model = Petition
        fields = ("id", "petitioner", "sender_name", "text", "status", "grade", "amount", "offering",
                  "refund_reason", "decision", "submitted_at", "received_at", "decided_at", "refunded_at", "votes",
                  "grant")

    @extend_schema_field(GrantSerializer(allow_null=True))
    def get_grant(self, petition: Petition) -> dict[str, Any] | None:
        grant = getattr(petition, "grant", None)
        return GrantSerializer(grant).data if grant is not None else None


class PetitionStatusSerializer(serializers.Serializer):
    """A petition's status: "sent" until the log shows the transfer, "transfer-refused" if wAR refused it, or the log's."""

    id = serializers.CharField()
    status = serializers.CharField()
    final = serializers.BooleanField(source="is_final")
    petitioner = serializers.CharField()
    sender_name = serializers.CharField()
    text = serializers.CharField()
    transfer_error = serializers.CharField(allow_null=True)
    governors = serializers.ListField(child=serializers.CharField())
    petition = PetitionSerializer(allow_null=True)


class PetitionSubmitSerializer(serializers.Serializer):
    """A petition sent by the signed-in account's custodial wallet."""

    text = serializers.CharField(max_length=MAX_PETITION_CHARS, allow_blank=True, trim_whitespace=False)
    sender_name = serializers.CharField(max_length=MAX_NAME_CHARS, allow_blank=True, trim_whitespace=False)


class PetitionSentSerializer(serializers.ModelSerializer):
    """A petition handed to the messenger: its id is the wAR transfer's message id."""

    id = serializers.CharField(source="message_id")
    offering = AmountField()
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = PetitionRequest
        fields = ("id", "petitioner", "sender_name", "text", "offering", "source", "created_at", "status_url")

    def get_status_url(self, request: PetitionRequest) -> str:
        return reverse("web-api:petition", kwargs={"petition_id": request.message_id})


class BalancesSerializer(serializers.Serializer):
    """An address's balances in base units."""

    address = serializers.CharField()
    wAR = AmountField()  # noqa: N815 - the ticker is the key
    LLAMA = AmountField()


class SupplySerializer(serializers.Serializer):
    """LLAMA's supply (ledger state), cap, and the Fed's grants."""

    supply = AmountField()
    max_supply = AmountField(allow_null=True)
    granted = AmountField()
    grants = serializers.IntegerField()


class FaucetDripSerializer(serializers.Serializer):
    """A drip: the operator's Mint message to the account's address."""

    message_id = serializers.CharField()
    address = serializers.CharField()
    amount = AmountField()
    created_at = serializers.DateTimeField()


ERROR = inline_serializer("Error", {"detail": serializers.CharField(),
                                    "errors": serializers.DictField(child=serializers.CharField(), required=False)})


class BodyTooLarge(APIException):
    """A body over its endpoint's limit, refused before it is read."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class OctetStreamParser(BaseParser):
    """A raw body: the bytes of a signed ANS-104 data item, at most the scheduler's item limit.

    A declared Content-Length over the limit is refused before anything is read; without one, at most one byte
    more than the limit is read.
    """

    media_type = "application/octet-stream"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> bytes:
        limit = settings.AO["MAX_MESSAGE_BYTES"]
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH", "") if request is not None else ""
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"the body is {declared} bytes; a signed petition is at most {limit} bytes")
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes; a signed petition is at most {limit} bytes")
        return body


class Pagination(PageNumberPagination):
    """Pages of 20."""

    page_size = PAGE_SIZE


# --- views --------------------------------------------------------------------------------------------------


class PetitionsView(_WriteView, generics.ListAPIView):
    """GET: petitions, newest first (`?petitioner=` filters). POST: a petition from the signed-in account."""

    serializer_class = PetitionSerializer
    pagination_class = Pagination
    throttle_classes = [PetitionThrottle]

    def get_permissions(self) -> list[Any]:
        return [IsAuthenticated()] if self.request.method == "POST" else [AllowAny()]

    def get_queryset(self) -> QuerySet[Petition]:
        return selectors.petitions(petitioner=self.request.query_params.get("petitioner")).prefetch_related("votes")

    @extend_schema(request=PetitionSubmitSerializer,
                   responses={201: PetitionSentSerializer, 400: ERROR, 409: ERROR, 429: ERROR, 503: ERROR})
    def post(self, request: Request) -> Response:
        """Send a petition: the account's custodial wallet transfers the offering in wAR to the Fed with it."""
        payload = PetitionSubmitSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        sent = services.petition_submit(user=request.user, text=payload.validated_data["text"],
                                        sender_name=payload.validated_data["sender_name"],
                                        source=PetitionRequest.Source.API)
        return Response(PetitionSentSerializer(sent).data, status=status.HTTP_201_CREATED)


class SignedPetitionView(_WriteView):
    """A client-signed ANS-104 wAR Transfer of the offering to the Fed (X-Petition, X-Sender-Name), forwarded as is."""

    parser_classes = [OctetStreamParser]
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []  # the item's own signature is the authentication
    throttle_classes = [PetitionThrottle]

    @extend_schema(request={"application/octet-stream": {"type": "string", "format": "binary"}},
                   responses={202: PetitionSentSerializer, 400: ERROR, 409: ERROR, 429: ERROR, 503: ERROR})
    def post(self, request: Request) -> Response:
        """Forward a signed petition transfer."""
        raw = request.data if isinstance(request.data, bytes) else b""
        if not raw:
            raise InvalidInput("send the signed data item's bytes as the body (Content-Type: application/octet-stream)")
        sent = services.petition_submit_signed(raw=raw)
        return Response(PetitionSentSerializer(sent).data, status=status.HTTP_202_ACCEPTED)


class PetitionView(APIView):
    """One petition: its status, votes with reasons, decision and grant."""

    @extend_schema(responses={200: PetitionStatusSerializer, 404: ERROR})
    def get(self, request: Request, petition_id: str) -> Response:
        """A petition's status and record."""
        found = selectors.petition_status(petition_id)
        if found is None:
            raise Http404("no petition with this id")
        return Response(PetitionStatusSerializer(found).data)


class GrantsView(generics.ListAPIView):
    """Grants, newest decision first."""

    serializer_class = GrantSerializer
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[Grant]:
        return Grant.objects.order_by("-decided_at", "petition_id")


class BalancesView(APIView):
    """An address's wAR and LLAMA balances (evaluated ledger state)."""

    @extend_schema(responses={200: BalancesSerializer, 400: ERROR})
    def get(self, request: Request, address: str) -> Response:
        """Balances of one address."""
        try:
            ADDRESS_VALIDATOR(address)
        except ValidationError:
            return Response({"detail": "an address is 43 characters of base64url"}, status=status.HTTP_400_BAD_REQUEST)
        found = selectors.balances(address)
        return Response(BalancesSerializer({"address": address, **found}).data)


class SupplyView(APIView):
    """LLAMA's supply."""

    @extend_schema(responses={200: SupplySerializer})
    def get(self, request: Request) -> Response:
        """Supply, cap and grants."""
        return Response(SupplySerializer(selectors.llama_supply()).data)


class FaucetView(_WriteView):
    """Demo wAR for the signed-in account."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [FaucetThrottle]

    @extend_schema(request=None, responses={201: FaucetDripSerializer, 403: ERROR, 429: ERROR, 503: ERROR})
    def post(self, request: Request) -> Response:
        """Mint the faucet amount of wAR to the account's address."""
        drip = services.faucet_drip(user=request.user)
        return Response(FaucetDripSerializer(drip).data, status=status.HTTP_201_CREATED)
