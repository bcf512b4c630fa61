# gaiaorch beside the GAIA stack. Build: docker build -t gaiaorch .
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV GAIAORCH_BIND=0.0.0.0 \
    GAIAORCH_VAR_DIR=/var/lib/gaiaorch \
    GAIAORCH_GPU_BACKEND=nvml \
    PYTHONUNBUFFERED=1
VOLUME /var/lib/gaiaorch
EXPOSE 6410
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6410/health', timeout=2)"
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py ensure_operator && exec python manage.py runstack"]
