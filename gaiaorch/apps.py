from django.apps import AppConfig


class GaiaorchConfig(AppConfig):
    name = "gaiaorch"
    verbose_name = "gaiaorch"
