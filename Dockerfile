# The portal / worker / emulator image used by docker-compose.yml, and the production image. Production
# runs it with DEBUG=0 and the variables in docs/production.md: a setting that is missing or still at
# its embedded value stops start-up with a message naming each one. The build itself needs none of
# them (collectstatic runs with DEBUG=1).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# /metrics sums every gunicorn worker and pool process of the container through this folder (docs/metrics.md)
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/chatorbit-prometheus
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock gunicorn
COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
